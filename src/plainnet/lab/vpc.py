"""The lab's emulation of a cloud VPC: EC2 objects in moto, and a router namespace whose
kernel routes follow moto's route tables. Lab-only — product code never imports it.

:func:`build_vpc` makes, in moto, what a small AWS cluster has: a VPC, one subnet per lab
segment (each in its own availability zone) with a route table of its own tagged for
the cluster (a default route to an internet gateway in each: the foreign route
``plainnet cloud-routes`` must never touch), and one instance per node whose private
address is the node's lab address.

:class:`VpcFabric` is the VPC's router: each segment's traffic is routed by its
subnet's route table (``ip rule iif <segment interface> lookup <table>``), whose kernel
routes it keeps equal to moto's — a route to an instance is ``via`` that instance's
address, a blackhole a blackhole, the ``local`` route the segments' connected routes;
routes to gateways that do not exist in the lab (internet, peering) are left out. So a
route ``plainnet cloud-routes`` writes into moto carries packets between lab nodes,
and one deleted there stops them, as in the cloud.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass
from ipaddress import ip_network
from pathlib import Path
from typing import Any

log = logging.getLogger("plainnet.lab.vpc")

VPC_CIDR = "10.250.0.0/16"
FIRST_TABLE = 100
#: moto's availability zones in its default region
ZONES = ("us-east-1a", "us-east-1b", "us-east-1c", "us-east-1d")


@dataclass
class VpcLayout:
    vpc_id: str
    #: segment -> subnet id
    subnets: dict[str, str]
    #: segment -> the route table of its subnet
    tables: dict[str, str]
    #: node -> instance id
    instances: dict[str, str]
    #: node -> spec.providerID
    provider_ids: dict[str, str]

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> VpcLayout:
        return cls(**json.loads(path.read_text()))


class InNamespace:
    """An EC2 client whose every call runs with this thread in a lab host's namespace
    (where moto listens on loopback): the connections it opens are made there."""

    def __init__(self, client: Any, namespace_path: Path) -> None:
        self._client = client
        self._path = namespace_path

    def __getattr__(self, name: str) -> Any:
        from plainnet.namespaces import thread_in_namespace

        method = getattr(self._client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            with thread_in_namespace(self._path):
                return method(*args, **kwargs)

        return call


def build_vpc(
    ec2: Any,
    cluster_name: str,
    segments: list[tuple[str, str]],
    nodes: list[tuple[str, str, str]],
) -> VpcLayout:
    """``segments``: (name, IPv4 subnet); ``nodes``: (name, segment, IPv4 address)."""
    vpc = ec2.create_vpc(CidrBlock=VPC_CIDR)["Vpc"]["VpcId"]
    gateway = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=gateway, VpcId=vpc)
    tag = {"Key": f"kubernetes.io/cluster/{cluster_name}", "Value": "owned"}
    subnets, tables, zones = {}, {}, {}
    for index, (segment, cidr) in enumerate(segments):
        zones[segment] = ZONES[index % len(ZONES)]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=cidr, AvailabilityZone=zones[segment])
        subnets[segment] = subnet["Subnet"]["SubnetId"]
        table = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
        ec2.create_tags(Resources=[table], Tags=[tag])
        ec2.associate_route_table(RouteTableId=table, SubnetId=subnets[segment])
        ec2.create_route(RouteTableId=table, DestinationCidrBlock="0.0.0.0/0", GatewayId=gateway)
        tables[segment] = table
    image = ec2.describe_images()["Images"][0]["ImageId"]
    instances, provider_ids = {}, {}
    for node, segment, address in nodes:
        instance = ec2.run_instances(
            ImageId=image,
            MinCount=1,
            MaxCount=1,
            SubnetId=subnets[segment],
            PrivateIpAddress=address,
        )["Instances"][0]["InstanceId"]
        instances[node] = instance
        provider_ids[node] = f"aws:///{zones[segment]}/{instance}"
    return VpcLayout(vpc, subnets, tables, instances, provider_ids)


class VpcFabric:
    """Keeps the router namespace's per-subnet tables equal to moto's route tables."""

    def __init__(
        self, ec2: Any, vpc_id: str, router_namespace: str, interfaces: dict[str, str]
    ) -> None:
        """``interfaces``: subnet id -> the router's interface on that subnet's segment."""
        from pyroute2 import IPRoute

        self.ec2 = ec2
        self.vpc_id = vpc_id
        self.interfaces = interfaces
        self.ipr = IPRoute(netns=router_namespace)
        self.table_of = {s: FIRST_TABLE + i for i, s in enumerate(sorted(interfaces))}
        self._rules()

    def _rules(self) -> None:
        for subnet, ifname in self.interfaces.items():
            table = self.table_of[subnet]
            if not self.ipr.get_rules(table=table):
                self.ipr.rule("add", iifname=ifname, table=table, priority=table)

    def _connected(self) -> list[tuple[str, dict]]:
        """The ``local`` route: every segment of the VPC, on its interface."""
        found = []
        for ifname in self.interfaces.values():
            index = self.ipr.link_lookup(ifname=ifname)[0]
            for address in self.ipr.get_addr(index=index, family=2):
                prefix = f"{address.get_attr('IFA_ADDRESS')}/{address['prefixlen']}"
                found.append((str(ip_network(prefix, strict=False)), {"oif": index}))
        return found

    def sync(self) -> int:
        """One pass; returns how many kernel routes changed."""
        tables = self.ec2.describe_route_tables(
            Filters=[{"Name": "vpc-id", "Values": [self.vpc_id]}]
        )["RouteTables"]
        addresses = {
            item["InstanceId"]: item.get("PrivateIpAddress")
            for reservation in self.ec2.describe_instances()["Reservations"]
            for item in reservation["Instances"]
            if item.get("State", {}).get("Name") in ("running", "pending")
        }
        connected = self._connected()
        changed = 0
        for table in tables:
            for association in table.get("Associations", []):
                subnet = association.get("SubnetId")
                if subnet in self.table_of:
                    changed += self._sync_table(self.table_of[subnet], table, addresses, connected)
        return changed

    def _sync_table(
        self, number: int, table: dict, addresses: dict[str, str | None], connected: list
    ) -> int:
        desired: dict[str, dict] = dict(connected)
        for route in table.get("Routes", []):
            destination = route.get("DestinationCidrBlock")
            if not destination or route.get("GatewayId") or ":" in destination:
                continue  # local, internet gateway, IPv6: nothing in the lab behind them
            gateway = addresses.get(route.get("InstanceId", ""))
            if route.get("State") == "blackhole" or (route.get("InstanceId") and not gateway):
                desired[destination] = {"type": "blackhole"}
            elif gateway:
                desired[destination] = {"gateway": gateway}
        present: dict[str, dict] = {}
        for route in self.ipr.get_routes(table=number, family=2):
            destination = f"{route.get_attr('RTA_DST') or '0.0.0.0'}/{route['dst_len']}"
            present[destination] = route
        changed = 0
        for destination, how in desired.items():
            if destination in present and _same(present[destination], how):
                continue
            self.ipr.route("replace", dst=destination, table=number, **how)
            changed += 1
        for destination in set(present) - set(desired):
            self.ipr.route("del", dst=destination, table=number)
            changed += 1
        return changed

    def run(self, interval: float = 0.2) -> None:
        while True:
            try:
                changed = self.sync()
                if changed:
                    log.info("vpc fabric: %d route changes", changed)
            except Exception as exc:  # the fabric outlives a moto hiccup
                log.warning("vpc fabric pass failed: %s", exc)
            time.sleep(interval)


def _same(route: Any, how: dict) -> bool:
    if how.get("type") == "blackhole":
        return route["type"] == 6  # RTN_BLACKHOLE
    if "gateway" in how:
        return route.get_attr("RTA_GATEWAY") == how["gateway"]
    return route.get_attr("RTA_OIF") == how["oif"] and route.get_attr("RTA_GATEWAY") is None


def main() -> None:
    """``python -m plainnet.lab.vpc --endpoint URL --vpc-id ID --router NS SUBNET=IF...``"""
    import boto3

    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--vpc-id", required=True)
    parser.add_argument("--router", required=True)
    parser.add_argument("interfaces", nargs="+", help="subnet-id=interface")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    ec2 = boto3.client("ec2", endpoint_url=args.endpoint, region_name="us-east-1")
    interfaces = dict(item.split("=", 1) for item in args.interfaces)
    VpcFabric(ec2, args.vpc_id, args.router, interfaces).run()


if __name__ == "__main__":
    main()
