"""The lab's stand-in for a kubelet (and for the controllers a namespace needs): lab
pods as real Pod objects in the lab's kube-apiserver, so NetworkPolicies select them
by their labels and namespaces as in a cluster.

A pod is registered after the CNI plugin gave it its addresses: the Pod (with
``nodeName``, labels, container ports), then its status (``Running``, ``podIPs``) — the
order a kubelet reports them in. Namespaces get their labels and the ``default``
ServiceAccount the API server's ServiceAccount admission asks for. Lab-only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from plainnet.errors import PlainnetError
from plainnet.ipam.types import IPAddress
from plainnet.testing.kube_control_plane import KubeControlPlane

#: (name, port, protocol) of a container port
PortSpec = tuple[str, int, str]


def _check(status: int, reply: Any, what: str, allowed: Sequence[int] = (200, 201)) -> None:
    if status not in allowed:
        raise PlainnetError(f"{what} failed ({status}): {str(reply)[:300]}")


def ensure_namespace(
    kube: KubeControlPlane, name: str, labels: Mapping[str, str] | None = None
) -> None:
    """The namespace, created if missing (labelled ``labels``, by default ``ns: <name>``
    — newer API servers label every namespace with its name); an existing one is
    relabelled only when ``labels`` are given."""
    wanted = dict(labels) if labels is not None else {"ns": name}
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": wanted}}
    status, reply = kube.request("POST", "/api/v1/namespaces", body)
    if status == 409:
        if labels is not None:
            set_labels(kube, f"/api/v1/namespaces/{name}", labels)
    else:
        _check(status, reply, f"creating namespace {name}")
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}}
    status, reply = kube.request("POST", f"/api/v1/namespaces/{name}/serviceaccounts", account)
    _check(status, reply, f"the default service account of {name}", (201, 409))


def register_pod(
    kube: KubeControlPlane,
    namespace: str,
    name: str,
    node: str,
    addresses: Sequence[IPAddress],
    labels: Mapping[str, str] = {},
    ports: Sequence[PortSpec] = (),
) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": {
            "nodeName": node,
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "main",
                    "image": "lab.invalid/none",
                    "ports": [
                        {"name": n, "containerPort": p, "protocol": proto} for n, p, proto in ports
                    ],
                }
            ],
        },
    }
    status, reply = kube.request("POST", f"/api/v1/namespaces/{namespace}/pods", body)
    _check(status, reply, f"creating pod {namespace}/{name}")
    ips = [{"ip": str(a)} for a in addresses]
    status_body = {
        "status": {
            "phase": "Running",
            "podIP": ips[0]["ip"] if ips else None,
            "podIPs": ips,
        }
    }
    status, reply = kube.request(
        "PATCH", f"/api/v1/namespaces/{namespace}/pods/{name}/status", status_body
    )
    _check(status, reply, f"the status of pod {namespace}/{name}")


def unregister_pod(kube: KubeControlPlane, namespace: str, name: str) -> None:
    status, reply = kube.request(
        "DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}?gracePeriodSeconds=0"
    )
    _check(status, reply, f"deleting pod {namespace}/{name}", (200, 202, 404))


def set_labels(kube: KubeControlPlane, path: str, labels: Mapping[str, str]) -> None:
    """Replace an object's labels (a JSON merge patch that also removes the others)."""
    status, current = kube.request("GET", path)
    _check(status, current, f"reading {path}")
    old = current.get("metadata", {}).get("labels") or {}
    patch = {"metadata": {"labels": {**dict.fromkeys(old), **labels}}}
    status, reply = kube.request("PATCH", path, patch)
    _check(status, reply, f"labelling {path}")
