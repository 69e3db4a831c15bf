"""What every node the project launches keeps, whichever way it is launched.

IMDSv2 only, with a hop limit of one, so containers cannot reach the node's
credentials through the metadata service; an encrypted gp3 root volume. The
same settings reach EC2 launch templates (managed node groups, the system
nodes) and Karpenter's EC2NodeClass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pulumi
import pulumi_aws as aws

ROOT_DEVICE = "/dev/xvda"
IMDS_HOP_LIMIT = 1
#: Root volume performance of accelerator nodes: image pulls of 10-15 GB are
#: throughput-bound (gp3 baseline is 125 MB/s and 3000 IOPS).
ROOT_THROUGHPUT_MBPS = 250
ROOT_IOPS = 3000
#: gp3 root volume size limits, GiB.
ROOT_VOLUME_RANGE = (20, 16384)


def launch_template(
    name: str,
    *,
    root_volume_gib: int,
    fast_root: bool = False,
    description: str | None = None,
    network_interfaces: Sequence[aws.ec2.LaunchTemplateNetworkInterfaceArgs] | None = None,
    vpc_security_group_ids: pulumi.Input[Sequence[pulumi.Input[str]]] | None = None,
    placement: aws.ec2.LaunchTemplatePlacementArgs | None = None,
    instance_tags: dict[str, str] | None = None,
    opts: pulumi.ResourceOptions,
) -> aws.ec2.LaunchTemplate:
    """A launch template with the project's node hardening.

    Args:
        name: Logical name.
        root_volume_gib: Root volume size.
        fast_root: Provision the root volume for image pulls
            (``ROOT_THROUGHPUT_MBPS``, ``ROOT_IOPS``) and delete it with the node.
        description: Template description.
        network_interfaces: EFA interfaces (then no ``vpc_security_group_ids``).
        vpc_security_group_ids: Security groups of the primary interface.
        placement: A placement group.
        instance_tags: Tags of the instances launched from it.
        opts: Resource options.
    """
    ebs: dict[str, Any] = {
        "volume_size": root_volume_gib,
        "volume_type": "gp3",
        "encrypted": "true",
    }
    if fast_root:
        ebs |= {
            "delete_on_termination": "true",
            "throughput": ROOT_THROUGHPUT_MBPS,
            "iops": ROOT_IOPS,
        }
    return aws.ec2.LaunchTemplate(
        name,
        description=description,
        update_default_version=True,
        metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
            http_endpoint="enabled",
            http_tokens="required",
            http_put_response_hop_limit=IMDS_HOP_LIMIT,
        ),
        block_device_mappings=[
            aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                device_name=ROOT_DEVICE,
                ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(**ebs),
            )
        ],
        network_interfaces=network_interfaces,
        vpc_security_group_ids=vpc_security_group_ids,
        placement=placement,
        tag_specifications=(
            [
                aws.ec2.LaunchTemplateTagSpecificationArgs(
                    resource_type="instance", tags=instance_tags
                )
            ]
            if instance_tags
            else None
        ),
        opts=opts,
    )


def node_class_hardening(root_volume_gib: int) -> dict[str, Any]:
    """The same hardening as EC2NodeClass ``spec`` fields (Karpenter)."""
    return {
        "metadataOptions": {
            "httpEndpoint": "enabled",
            "httpProtocolIPv6": "disabled",
            "httpTokens": "required",
            "httpPutResponseHopLimit": IMDS_HOP_LIMIT,
        },
        "blockDeviceMappings": [
            {
                "deviceName": ROOT_DEVICE,
                "ebs": {
                    "volumeSize": f"{root_volume_gib}Gi",
                    "volumeType": "gp3",
                    "encrypted": True,
                    "deleteOnTermination": True,
                    "throughput": ROOT_THROUGHPUT_MBPS,
                    "iops": ROOT_IOPS,
                },
            }
        ],
    }
