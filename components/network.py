"""The VPC of a dedicated cluster: public and private subnets over 2-3 AZs, one NAT gateway.

Nodes live in the private subnets only (large: pods take VPC addresses); the
public subnets (small) hold the NAT gateway and internet-facing load
balancers. Only the private subnets carry Karpenter's discovery tag, so no
node ever lands in a public subnet.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

#: Subnet tag Karpenter's EC2NodeClass selects subnets and security groups by.
DISCOVERY_TAG = "karpenter.sh/discovery"
#: VPC sizes a dedicated cluster accepts (IPv4 prefix lengths).
VPC_PREFIX_RANGE = (16, 20)


@dataclass(frozen=True)
class Network:
    """What the cluster needs from its VPC."""

    vpc_id: pulumi.Output[str]
    private_subnet_ids: list[pulumi.Output[str]]
    public_subnet_ids: list[pulumi.Output[str]]


def check_vpc_cidr(cidr: str) -> ipaddress.IPv4Network:
    """An IPv4 network of a size the subnet split supports.

    Raises:
        ValueError: naming ``vpc_cidr``.
    """
    try:
        net = ipaddress.ip_network(cidr, strict=True)
    except ValueError as e:
        raise ValueError(f"vpc_cidr: {cidr!r} is not a network CIDR ({e})") from None
    lo, hi = VPC_PREFIX_RANGE
    if not isinstance(net, ipaddress.IPv4Network) or not lo <= net.prefixlen <= hi:
        raise ValueError(f"vpc_cidr: must be an IPv4 /{lo} to /{hi}, got {cidr}")
    return net


def subnet_cidrs(cidr: str, zones: int) -> tuple[list[str], list[str]]:
    """Split the VPC: large private subnets (pods take VPC IPs), small public ones."""
    net = check_vpc_cidr(cidr)
    eighths = list(net.subnets(prefixlen_diff=3))
    private = [str(s) for s in eighths[:zones]]
    public = [str(s) for s in list(eighths[zones].subnets(prefixlen_diff=2))[:zones]]
    return private, public


def build_network(
    name: str, cluster_name: str, vpc_cidr: str, zones: int, parent: pulumi.Resource
) -> Network:
    """Create the VPC, its subnets, gateways and routes, as children of ``parent``.

    Args:
        name: Prefix of the logical names.
        cluster_name: The EKS cluster's name (tags, discovery).
        vpc_cidr: The VPC's network.
        zones: Availability zones to span (2 or 3).
        parent: The component that owns them (the cluster).
    """
    child = pulumi.ResourceOptions(parent=parent)
    available = aws.get_availability_zones_output(
        state="available",
        # Local and Wavelength zones lack most instance types.
        filters=[{"name": "opt-in-status", "values": ["opt-in-not-required"]}],
        opts=pulumi.InvokeOutputOptions(parent=parent),
    )

    def zone(i: int) -> pulumi.Output[str]:
        def pick(names: list[str]) -> str:
            if len(names) < zones:
                raise ValueError(
                    f"availability_zones: {zones} requested, the region has {len(names)}"
                )
            return names[i]

        return available.names.apply(pick)

    private_cidrs, public_cidrs = subnet_cidrs(vpc_cidr, zones)
    vpc = aws.ec2.Vpc(
        f"{name}-vpc",
        cidr_block=vpc_cidr,
        enable_dns_hostnames=True,
        enable_dns_support=True,
        tags={"Name": f"{cluster_name}-vpc"},
        opts=child,
    )
    igw = aws.ec2.InternetGateway(
        f"{name}-igw", vpc_id=vpc.id, tags={"Name": f"{cluster_name}-igw"}, opts=child
    )
    public_rt = aws.ec2.RouteTable(
        f"{name}-public-rt",
        vpc_id=vpc.id,
        routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", gateway_id=igw.id)],
        tags={"Name": f"{cluster_name}-public"},
        opts=child,
    )

    def subnets(
        tier: str, cidrs: list[str], route_table: aws.ec2.RouteTable, tags: dict[str, str]
    ) -> list[aws.ec2.Subnet]:
        """One subnet per zone, each associated with the tier's route table."""
        out = []
        for i, cidr in enumerate(cidrs):
            subnet = aws.ec2.Subnet(
                f"{name}-{tier}-{i}",
                vpc_id=vpc.id,
                cidr_block=cidr,
                availability_zone=zone(i),
                map_public_ip_on_launch=True if tier == "public" else None,
                tags={"Name": f"{cluster_name}-{tier}-{i}", **tags},
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-{tier}-{i}",
                subnet_id=subnet.id,
                route_table_id=route_table.id,
                opts=child,
            )
            out.append(subnet)
        return out

    public = subnets("public", public_cidrs, public_rt, {"kubernetes.io/role/elb": "1"})
    # One NAT gateway: a per-AZ NAT triples a fixed cost for an outage mode
    # (one AZ down) that a single-AZ GPU placement does not survive anyway.
    eip = aws.ec2.Eip(f"{name}-nat", domain="vpc", opts=child)
    nat = aws.ec2.NatGateway(
        f"{name}-nat",
        allocation_id=eip.id,
        subnet_id=public[0].id,
        tags={"Name": f"{cluster_name}-nat"},
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[igw]),
    )
    private_rt = aws.ec2.RouteTable(
        f"{name}-private-rt",
        vpc_id=vpc.id,
        routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", nat_gateway_id=nat.id)],
        tags={"Name": f"{cluster_name}-private"},
        opts=child,
    )
    # Only private subnets are discoverable: nodes never get public IPs.
    private = subnets(
        "private",
        private_cidrs,
        private_rt,
        {"kubernetes.io/role/internal-elb": "1", DISCOVERY_TAG: cluster_name},
    )
    return Network(vpc.id, [s.id for s in private], [s.id for s in public])
