"""deploy/rbac.yaml applied to a real API server: each identity gets exactly what its
role allows — the agent may read Nodes and nothing more."""

from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.kube]
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def apply(kube, path: Path) -> None:
    kube.apply(path)


NODE = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a"}}
PATCH = {"spec": {"podCIDR": "10.244.7.0/24", "podCIDRs": ["10.244.7.0/24"]}}
EVENT = {
    "apiVersion": "v1",
    "kind": "Event",
    "metadata": {"name": "e1", "namespace": "default"},
    "involvedObject": {"kind": "Node", "name": "node-a"},
    "reason": "Test",
    "message": "m",
}


def test_each_identity_gets_exactly_its_role(kube):
    apply(kube, DEPLOY / "rbac.yaml")
    assert kube.request("POST", "/api/v1/nodes", NODE)[0] == 201
    # the agent: read nodes, nothing else
    assert kube.request("GET", "/api/v1/nodes", identity="agent")[0] == 200
    assert kube.request("GET", "/api/v1/nodes?watch=1&timeoutSeconds=1", identity="agent")[0] == 200
    assert kube.request("PATCH", "/api/v1/nodes/node-a", PATCH, identity="agent")[0] == 403
    assert kube.request("DELETE", "/api/v1/nodes/node-a", identity="agent")[0] == 403
    assert kube.request("GET", "/api/v1/namespaces/kube-system/secrets", identity="agent")[0] == 403
    # the allocator: assign podCIDRs and record events, not delete nodes or read secrets
    status, node = kube.request("PATCH", "/api/v1/nodes/node-a", PATCH, identity="allocator")
    assert status == 200 and node["spec"]["podCIDR"] == "10.244.7.0/24"
    assert (
        kube.request("POST", "/api/v1/namespaces/default/events", EVENT, identity="allocator")[0]
        == 201
    )
    assert kube.request("DELETE", "/api/v1/nodes/node-a", identity="allocator")[0] == 403
    assert (
        kube.request("GET", "/api/v1/namespaces/kube-system/secrets", identity="allocator")[0]
        == 403
    )
    # someone with no binding at all
    assert kube.request("GET", "/api/v1/nodes", identity="nobody")[0] == 403
