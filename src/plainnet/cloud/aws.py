"""AWS EC2 behind :class:`~plainnet.cloud.provider.RouteProvider`, through boto3.

boto3 is the SDK AWS maintains, with the credential and region chain every AWS tool
uses (environment, shared config, instance profile, IRSA web identity) and the API's
own paginators; aiobotocore would give an asyncio client but lags botocore's
releases and adds a dependency for a controller that makes a handful of calls a
minute, so the controller runs these calls on threads instead.

Calls made (and so the IAM policy, ``deploy/cloud/aws/iam-policy.json``):
``DescribeRouteTables`` (filtered by VPC and the cluster tag), ``DescribeInstances``
(filtered by VPC), ``CreateRoute``, ``ReplaceRoute``, ``DeleteRoute`` and
``ModifyInstanceAttribute`` (SourceDestCheck only).

The SDK's own retries are kept short (standard mode, 3 attempts): throttling that
outlasts them ends the pass, and the controller waits with its backoff and jitter.
"""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import ip_network
from typing import Any, Literal, TypeVar

from plainnet.cloud.plan import CloudState, Instance, Route, RouteChange, RouteTable
from plainnet.cloud.provider import CloudError

T = TypeVar("T")

#: The tag that marks a route table as this cluster's (the upstream controller's).
CLUSTER_TAG = "kubernetes.io/cluster/{name}"


def cluster_tag(cluster_name: str) -> str:
    return CLUSTER_TAG.format(name=cluster_name)


class AwsRoutes:
    def __init__(
        self,
        vpc_id: str,
        cluster_name: str,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        target: Literal["instance", "network-interface"] = "instance",
        on_call: Callable[[str, str | None], None] | None = None,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.vpc_id = vpc_id
        self.cluster_name = cluster_name
        self.target = target
        self.on_call = on_call or (lambda operation, error: None)
        config = Config(
            retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=20
        )
        self.ec2 = boto3.client("ec2", region_name=region, endpoint_url=endpoint_url, config=config)

    def _call(self, operation: str, function: Callable[..., T], **arguments: Any) -> T:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            result = function(**arguments)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", "Unknown"))
            self.on_call(operation, code)
            raise CloudError(operation, code, str(error.get("Message", ""))[:300]) from None
        except BotoCoreError as exc:  # no answer: endpoint away, credentials missing, ...
            self.on_call(operation, "Unreachable")
            raise CloudError(operation, "Unreachable", str(exc)[:300]) from None
        self.on_call(operation, None)
        return result

    def _pages(self, operation: str, method: str, key: str, **arguments: Any) -> list[dict]:
        items: list[dict] = []
        token: str | None = None
        while True:
            page = self._call(
                operation,
                getattr(self.ec2, method),
                **arguments,
                **({"NextToken": token} if token else {}),
            )
            items += page.get(key, [])
            token = page.get("NextToken")
            if not token:
                return items

    def state(self) -> CloudState:
        tables = self._pages(
            "DescribeRouteTables",
            "describe_route_tables",
            "RouteTables",
            Filters=[
                {"Name": "vpc-id", "Values": [self.vpc_id]},
                {"Name": "tag-key", "Values": [cluster_tag(self.cluster_name)]},
            ],
        )
        reservations = self._pages(
            "DescribeInstances",
            "describe_instances",
            "Reservations",
            Filters=[{"Name": "vpc-id", "Values": [self.vpc_id]}],
        )
        instances = {}
        for reservation in reservations:
            for item in reservation.get("Instances", []):
                instance = _instance(item)
                instances[instance.id] = instance
        return CloudState(tuple(_table(t) for t in tables), instances)

    def apply(self, change: RouteChange) -> None:
        destination = (
            {"DestinationCidrBlock": str(change.destination)}
            if change.destination.version == 4
            else {"DestinationIpv6CidrBlock": str(change.destination)}
        )
        where = {"RouteTableId": change.table, **destination}
        if change.operation == "delete":
            try:
                self._call("DeleteRoute", self.ec2.delete_route, **where)
            except CloudError as exc:
                if exc.code != "InvalidRoute.NotFound":
                    raise
            return
        target_key = "InstanceId" if self.target == "instance" else "NetworkInterfaceId"
        arguments = {**where, target_key: change.target}
        if change.operation == "replace":
            self._call("ReplaceRoute", self.ec2.replace_route, **arguments)
            return
        try:
            self._call("CreateRoute", self.ec2.create_route, **arguments)
        except CloudError as exc:
            if exc.code != "RouteAlreadyExists":
                raise
            self._call("ReplaceRoute", self.ec2.replace_route, **arguments)

    def disable_source_dest_check(self, instance: str) -> None:
        self._call(
            "ModifyInstanceAttribute",
            self.ec2.modify_instance_attribute,
            InstanceId=instance,
            SourceDestCheck={"Value": False},
        )


def _instance(item: dict) -> Instance:
    interfaces = sorted(
        item.get("NetworkInterfaces", []),
        key=lambda i: i.get("Attachment", {}).get("DeviceIndex", 0),
    )
    return Instance(
        id=str(item["InstanceId"]),
        network_interface=interfaces[0].get("NetworkInterfaceId") if interfaces else None,
        source_dest_check=bool(item.get("SourceDestCheck", True)),
        state=str(item.get("State", {}).get("Name", "running")),
    )


def _table(item: dict) -> RouteTable:
    routes = []
    for route in item.get("Routes", []):
        cidr = route.get("DestinationCidrBlock") or route.get("DestinationIpv6CidrBlock")
        if not cidr:
            continue  # prefix-list destinations are never a node's
        try:
            destination = ip_network(cidr)
        except ValueError:
            continue
        routes.append(
            Route(
                destination=destination,
                instance=route.get("InstanceId"),
                network_interface=route.get("NetworkInterfaceId"),
                state=str(route.get("State", "active")),
                origin=str(route.get("Origin", "CreateRoute")),
            )
        )
    return RouteTable(str(item["RouteTableId"]), tuple(routes))
