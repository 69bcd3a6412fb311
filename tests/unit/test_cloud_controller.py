"""The cloud-routes controller's failure handling, with a cloud held in memory: a table
the API calls full before the configured limit, throttling and an API away. (The
controller against a real EC2 implementation: tests/cloud/.)"""

import asyncio
from ipaddress import ip_network

from plainnet.cloud.controller import CloudRoutes
from plainnet.cloud.plan import CloudState, Instance, NodeFacts, Route, RouteChange, RouteTable
from plainnet.cloud.provider import ROUTE_LIMIT_EXCEEDED, CloudError

CLUSTER = [ip_network("10.244.0.0/16")]
LOCAL = Route(ip_network("10.250.0.0/16"), origin="CreateRouteTable")


class MemoryCloud:
    """One route table that refuses a route past ``real_limit`` routes, as AWS does when
    the account's quota is lower than the controller's setting; and a switch that
    makes every call fail with ``failure``."""

    def __init__(self, instances: int, real_limit: int) -> None:
        self.instances = {
            f"i-{i:08x}": Instance(f"i-{i:08x}", None, False) for i in range(instances)
        }
        self.routes: dict[str, Route] = {str(LOCAL.destination): LOCAL}
        self.real_limit = real_limit
        self.failure: str | None = None
        self.calls: list[str] = []

    def state(self) -> CloudState:
        self.calls.append("state")
        if self.failure:
            raise CloudError("DescribeRouteTables", self.failure, "")
        return CloudState((RouteTable("rtb-1", tuple(self.routes.values())),), self.instances)

    def apply(self, change: RouteChange) -> None:
        self.calls.append(change.operation)
        if self.failure:
            raise CloudError("CreateRoute", self.failure, "")
        if change.operation == "delete":
            self.routes.pop(str(change.destination), None)
        elif str(change.destination) not in self.routes and len(self.routes) >= self.real_limit:
            raise CloudError("CreateRoute", ROUTE_LIMIT_EXCEEDED, "the table is full")
        else:
            self.routes[str(change.destination)] = Route(change.destination, change.target)

    def disable_source_dest_check(self, instance: str) -> None:
        self.calls.append("check")


class Controller(CloudRoutes):
    """The controller without the API server: Events and conditions are recorded."""

    def __init__(self, cloud: MemoryCloud, nodes: int) -> None:
        super().__init__(None, cloud, CLUSTER, route_limit=50)  # type: ignore[arg-type]
        self.warnings: list[tuple[str, str]] = []
        for i in range(nodes):
            name = f"n{i}"
            self.cache.nodes[name] = NodeFacts(
                name, name, f"aws:///us-east-1a/i-{i:08x}", (f"10.244.{i}.0/24",), float(i)
            )

        async def warn(node, reason, message, uid):  # type: ignore[no-untyped-def]
            self.warnings.append((node, reason))

        self.events.warn = warn  # type: ignore[method-assign]

    async def _set_conditions(self, nodes, routed):  # type: ignore[no-untyped-def]
        self.routed_nodes = routed


def test_a_table_the_api_calls_full_is_not_retried_and_the_rest_are_named():
    cloud = MemoryCloud(instances=12, real_limit=9)  # the local route + 8 node routes
    controller = Controller(cloud, nodes=12)

    asyncio.run(controller.reconcile())
    assert len(cloud.routes) == 9
    assert controller.learned_limits == {"rtb-1": 9}
    creates = cloud.calls.count("create")
    assert creates <= 12  # each node tried once at most, no loop

    cloud.calls.clear()
    controller.warnings.clear()
    asyncio.run(controller.reconcile())
    assert "create" not in cloud.calls  # the learned limit plans no create the API refuses
    full = {n for n, r in controller.warnings if r == "RouteTableFull"}
    assert full == {f"n{i}" for i in range(8, 12)}
    assert controller.routed_nodes == {f"n{i}" for i in range(8)}
    assert controller.ready()[0]


def test_throttling_and_an_unreachable_api_only_wait(monkeypatch):
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr("plainnet.cloud.controller.asyncio.sleep", sleep)
    cloud = MemoryCloud(instances=2, real_limit=50)
    controller = Controller(cloud, nodes=2)
    for failure in ("RequestLimitExceeded", "Unreachable", "RequestLimitExceeded"):
        cloud.failure = failure
        asyncio.run(controller.reconcile())
        assert not controller.ready()[0] and failure in controller.ready()[1]
    assert len(slept) == 3 and slept[0] < slept[1] < slept[2] <= 60 * 1.5  # backoff grows
    cloud.failure = None
    asyncio.run(controller.reconcile())
    assert controller.ready()[0] and len(cloud.routes) == 3
