"""The allocator controller against a fake API client: a list, a watch and the leader
lease failing with network errors only make it wait and retry (a network error used to
end the process, and a failed watch relisted at once, in a tight loop)."""

import asyncio
from datetime import UTC, datetime
from ipaddress import ip_network

import httpx2 as httpx
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.core_v1 import NodeSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Node

from plainnet.allocator.controller import Allocator


class Listing:
    def __init__(self, items):
        self.items, self.resourceVersion = items, "7"

    def __aiter__(self):
        async def items():
            for item in self.items:
                yield item

        return items()


class FakeClient:
    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.fail = {"list": 2, "watch": 3, "get": 1}
        self.patched: dict[str, dict] = {}
        created = datetime(2026, 1, 1, tzinfo=UTC)
        self.nodes = [
            Node(metadata=ObjectMeta(name="n1", creationTimestamp=created), spec=NodeSpec())
        ]

    def _enter(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        if self.fail.get(name, 0) > 0:
            self.fail[name] -= 1
            raise httpx.ConnectError("connection refused")

    async def get(self, kind, name, namespace=None):
        self._enter("get")
        return Lease(metadata=ObjectMeta(name=name, namespace=namespace), spec=LeaseSpec())

    async def replace(self, obj):
        self._enter("replace")
        return obj

    async def create(self, obj):
        self._enter("create")
        return obj

    def list(self, kind):
        self._enter("list")
        return Listing(self.nodes)

    async def watch(self, kind, resource_version=None):
        self._enter("watch")
        await asyncio.sleep(3600)
        yield  # pragma: no cover

    async def patch(self, kind, name, body):
        self._enter("patch")
        self.patched[name] = body


def test_network_errors_only_make_the_allocator_wait():
    async def scenario():
        client = FakeClient()
        allocator = Allocator(client, [ip_network("10.244.0.0/16")], {4: 24, 6: 64}, "me")
        task = asyncio.create_task(allocator.run())
        try:
            for _ in range(200):
                if "n1" in client.patched and client.calls.get("watch", 0) >= 4:
                    break
                assert not task.done(), task.exception()
                await asyncio.sleep(0.05)
            assert client.patched["n1"]["spec"]["podCIDR"] == "10.244.0.0/24"
            assert client.calls["list"] >= 3  # two failures, then a good list
            # the failing watches were retried with a growing delay, not at once
            assert client.calls["watch"] <= 6
        finally:
            task.cancel()

    asyncio.run(scenario())
