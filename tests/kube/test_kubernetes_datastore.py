"""The Kubernetes datastore against a real kube-apiserver, as the agent's own (read-only)
identity: records from Node objects, watch with bookmarks, 410 Gone, claim waiting."""

import asyncio
from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest
import yaml

from plainnet.datastore.etcd import etcd_client
from plainnet.datastore.kubernetes import KubernetesDatastore
from plainnet.datastore.records import (
    ClusterNetwork,
    HistoryCompacted,
    NodeClaim,
    PeerRecord,
)
from plainnet.testing.etcd_server import EtcdServer
from plainnet.testing.kube_control_plane import KubeControlPlane
from tests.kube.test_rbac import apply

pytestmark = [pytest.mark.root, pytest.mark.kube]
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
CIDRS = [ip_network("10.244.0.0/16")]


@pytest.fixture(scope="module")
def rbac(kube):
    apply(kube, DEPLOY / "rbac.yaml")
    return kube


def node(name, cidr=None, address="10.250.0.9"):
    body = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name},
        "status": {"addresses": [{"type": "InternalIP", "address": address}]},
    }
    if cidr:
        body["spec"] = {"podCIDR": cidr, "podCIDRs": [cidr]}
    return body


def create(kube, name, cidr=None, address="10.250.0.9"):
    status, reply = kube.request("POST", "/api/v1/nodes", node(name, cidr, address))
    assert status == 201, reply
    # status is a subresource: addresses are written through it, as the kubelet does
    status, reply = kube.request(
        "PATCH", f"/api/v1/nodes/{name}/status", {"status": node(name, cidr, address)["status"]}
    )
    assert status == 200, reply


def store(kube, name="node-x"):
    network = ClusterNetwork(tuple(CIDRS), "host-gw")
    return KubernetesDatastore(name, network, "host-gw", kubeconfig=kube.kubeconfig("agent"))


def test_nodes_become_peer_records(rbac):
    create(rbac, "ds-a", "10.244.3.0/24", "10.250.0.3")
    create(rbac, "ds-b")  # no podCIDR yet

    async def scenario():
        datastore = store(rbac)
        snapshot = await datastore.list()
        await datastore.close()
        return snapshot

    snapshot = asyncio.run(scenario())
    a = snapshot.records["ds-a"]
    assert isinstance(a, PeerRecord)
    assert a.subnets == (ip_network("10.244.3.0/24"),)
    assert a.addresses == (ip_address("10.250.0.3"),)
    # a Node without a podCIDR is pending: no record, so no refusal on every agent
    assert "ds-b" not in snapshot.records
    assert snapshot.revision > 0


def test_watch_sees_changes_after_the_list(rbac):
    async def scenario():
        datastore = store(rbac)
        snapshot = await datastore.list()
        seen = []

        async def watch():
            async for batch in datastore.watch(snapshot.revision):
                seen.extend(c for c in batch if c.key is not None)
                if any(c.key == "ds-c" and c.record is None for c in seen):
                    return

        task = asyncio.create_task(watch())
        await asyncio.sleep(0.3)
        await asyncio.to_thread(create, rbac, "ds-c", "10.244.4.0/24")
        await asyncio.to_thread(rbac.request, "DELETE", "/api/v1/nodes/ds-c")
        await asyncio.wait_for(task, 10)
        await datastore.close()
        return seen

    seen = asyncio.run(scenario())
    keys = [(c.key, c.record is None) for c in seen]
    assert ("ds-c", False) in keys and ("ds-c", True) in keys


def test_a_compacted_resource_version_asks_for_a_relist():
    """410 Gone for real: an API server without watch cache, its etcd compacted."""
    with (
        EtcdServer() as etcd,
        KubeControlPlane(etcd.endpoint, extra_args=("--watch-cache=false",)) as kube,
    ):
        apply(kube, DEPLOY / "rbac.yaml")
        create(kube, "ds-churn", "10.244.9.0/24")

        async def scenario():
            datastore = store(kube)
            old = (await datastore.list()).revision
            for i in range(3):
                await asyncio.to_thread(
                    kube.request,
                    "PATCH",
                    "/api/v1/nodes/ds-churn",
                    {"metadata": {"annotations": {"n": str(i)}}},
                )
            client = etcd_client(etcd.endpoint)
            latest = (await client.put(b"plainnet-test-probe", b"x")).header.revision
            await client.compact(latest)
            await client.close()

            async def watch_from_old():
                async for _ in datastore.watch(old):
                    pass

            with pytest.raises(HistoryCompacted):
                await asyncio.wait_for(watch_from_old(), 20)
            await datastore.close()

        asyncio.run(scenario())


def test_claim_waits_for_the_allocator(rbac):
    create(rbac, "ds-new")

    async def scenario():
        datastore = store(rbac, "ds-new")
        claim = asyncio.create_task(
            datastore.claim(NodeClaim("ds-new", (ip_address("10.250.0.7"),), "host-gw"))
        )
        await asyncio.sleep(1.0)
        assert not claim.done()
        await asyncio.to_thread(
            rbac.request,
            "PATCH",
            "/api/v1/nodes/ds-new",
            {"spec": {"podCIDR": "10.244.5.0/24", "podCIDRs": ["10.244.5.0/24"]}},
        )
        record = await asyncio.wait_for(claim, 10)
        await datastore.close()
        return record

    record = asyncio.run(scenario())
    assert record.subnets == (ip_network("10.244.5.0/24"),)


def test_yaml_is_parsed(rbac):
    assert list(yaml.safe_load_all((DEPLOY / "rbac.yaml").read_text()))


def test_a_nodes_internal_ip_and_a_stall_probe(rbac):
    """Start-up picks the node's address from its Node's InternalIP when the node has
    several interfaces; the probe answers as the agent's own read-only identity."""
    create(rbac, "ds-addr", address="192.168.9.7")

    async def scenario():
        known = store(rbac, "ds-addr")
        missing = store(rbac, "ds-not-registered")
        try:
            await known.ping()
            await missing.ping()  # a Node not registered yet is an answer too
            return await known.node_addresses(), await missing.node_addresses()
        finally:
            await known.close()
            await missing.close()

    assert asyncio.run(scenario()) == ((ip_address("192.168.9.7"),), ())
