"""The AWS file systems that hold weights: FSx for Lustre and EFS.

Each function creates the file system (and its security group, and EFS's
mount targets) and returns what a static PersistentVolume needs; the claim is
:class:`~components.model_storage.ModelStorage`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pulumi
import pulumi_aws as aws

if TYPE_CHECKING:
    from components.model_storage import ModelStorageArgs

#: FSx for Lustre LNET ports (AWS FSx for Lustre user guide, "File system
#: access control with Amazon VPC"): 988, and 1018-1023.
LUSTRE_PORTS = ((988, 988), (1018, 1023))
NFS_PORT = 2049


@dataclass(frozen=True)
class StaticVolume:
    """What a static PersistentVolume of an existing file system needs."""

    file_system_id: pulumi.Output[str]
    csi: dict[str, Any]
    access_mode: str
    mount_options: list[pulumi.Input[str]] | None = None
    depends_on: list[pulumi.Resource] = field(default_factory=list)


def subnet_count(a: ModelStorageArgs) -> int:
    if a.subnet_count:
        return a.subnet_count
    assert isinstance(a.private_subnet_ids, Sequence)
    return len(a.private_subnet_ids)


def _subnet(ids: pulumi.Input[Sequence[pulumi.Input[str]]], i: int) -> pulumi.Output[str]:
    return pulumi.Output.from_input(ids).apply(lambda s: s[i])


def fsx_volume(
    name: str, a: ModelStorageArgs, tags: dict[str, str], child: pulumi.ResourceOptions
) -> StaticVolume:
    """An FSx for Lustre SCRATCH_2 file system in one private subnet, reachable from the nodes."""
    assert a.private_subnet_ids is not None and a.cluster_security_group_id is not None
    lnet = [
        aws.ec2.SecurityGroupIngressArgs(
            protocol="tcp",
            from_port=lo,
            to_port=hi,
            security_groups=[a.cluster_security_group_id],
            # Lustre servers of one file system also talk to each other.
            self=True,
            description=f"Lustre LNET {lo}-{hi} from cluster nodes",
        )
        for lo, hi in LUSTRE_PORTS
    ]
    sg = aws.ec2.SecurityGroup(
        f"{name}-fsx",
        vpc_id=a.vpc_id,
        description=f"FSx for Lustre of {name}: LNET from the cluster",
        ingress=lnet,
        egress=[{"protocol": "-1", "from_port": 0, "to_port": 0, "cidr_blocks": ["0.0.0.0/0"]}],
        tags={**tags, "Name": f"{name}-fsx"},
        opts=child,
    )
    # Lustre clients accept connections from the servers on the same ports;
    # these rules go on the nodes' group and leave with the endpoint.
    for lo, hi in LUSTRE_PORTS:
        aws.vpc.SecurityGroupIngressRule(
            f"{name}-fsx-client-{lo}",
            security_group_id=a.cluster_security_group_id,
            referenced_security_group_id=sg.id,
            ip_protocol="tcp",
            from_port=lo,
            to_port=hi,
            description=f"Lustre LNET {lo}-{hi} from FSx {name}",
            opts=child,
        )
    fs = aws.fsx.LustreFileSystem(
        f"{name}-fsx",
        deployment_type="SCRATCH_2",
        storage_capacity=a.size_gib,
        # SCRATCH file systems live in one subnet (one AZ).
        subnet_ids=_subnet(a.private_subnet_ids, 0),
        security_group_ids=[sg.id],
        data_compression_type="LZ4",
        tags={**tags, "Name": f"{name}-models"},
        opts=child,
    )
    return StaticVolume(
        file_system_id=fs.id,
        csi={
            "driver": "fsx.csi.aws.com",
            "volumeHandle": fs.id,
            "volumeAttributes": {"dnsname": fs.dns_name, "mountname": fs.mount_name},
        },
        access_mode="ReadWriteMany",
        mount_options=["flock"],
    )


def efs_volume(
    name: str, a: ModelStorageArgs, tags: dict[str, str], child: pulumi.ResourceOptions
) -> StaticVolume:
    """An encrypted EFS file system (or an existing one) with a mount target per subnet."""
    depends: list[pulumi.Resource] = []
    if a.file_system_id:
        fs_id: pulumi.Output[str] = pulumi.Output.from_input(a.file_system_id)
    else:
        assert a.private_subnet_ids is not None and a.cluster_security_group_id is not None
        fs = aws.efs.FileSystem(
            f"{name}-efs",
            encrypted=True,
            performance_mode="generalPurpose",
            throughput_mode="elastic",
            tags={**tags, "Name": f"{name}-models"},
            opts=child,
        )
        sg = aws.ec2.SecurityGroup(
            f"{name}-efs",
            vpc_id=a.vpc_id,
            description=f"EFS of {name}: NFS from the cluster",
            ingress=[
                {
                    "protocol": "tcp",
                    "from_port": NFS_PORT,
                    "to_port": NFS_PORT,
                    "security_groups": [a.cluster_security_group_id],
                    "description": "NFS from cluster nodes",
                }
            ],
            egress=[{"protocol": "-1", "from_port": 0, "to_port": 0, "cidr_blocks": ["0.0.0.0/0"]}],
            tags={**tags, "Name": f"{name}-efs"},
            opts=child,
        )
        for i in range(subnet_count(a)):
            depends.append(
                aws.efs.MountTarget(
                    f"{name}-efs-{i}",
                    file_system_id=fs.id,
                    subnet_id=_subnet(a.private_subnet_ids, i),
                    security_groups=[sg.id],
                    opts=child,
                )
            )
        fs_id = fs.id
    return StaticVolume(
        file_system_id=fs_id,
        csi={"driver": "efs.csi.aws.com", "volumeHandle": fs_id},
        access_mode="ReadWriteMany",
        # The PV waits for the mount targets: a mount before they exist fails.
        depends_on=depends,
    )
