"""Reading Kubernetes Node objects: the facts the datastore and the allocator both
take from them, read one way. Pure (works on lightkube's models or anything shaped
like them)."""

from __future__ import annotations

from datetime import datetime
from typing import Any


def pod_cidrs(node: Any) -> tuple[str, ...]:
    """``spec.podCIDRs``, or the older single ``spec.podCIDR``; () if none yet."""
    spec = node.spec
    if spec is None:
        return ()
    if spec.podCIDRs:
        return tuple(spec.podCIDRs)
    return (spec.podCIDR,) if spec.podCIDR else ()


def internal_ips(node: Any) -> list[str]:
    status = node.status
    return [a.address for a in (status.addresses or []) if a.type == "InternalIP"] if status else []


def created_at(node: Any) -> float:
    """The Node's creation time (seconds); earlier claims win overlaps. 0 if unknown."""
    created = node.metadata.creationTimestamp
    return created.timestamp() if isinstance(created, datetime) else 0.0
