"""The facts this node's agent hands to its CNI side: the node's pod subnet(s), the
cluster CIDR(s) (traffic leaving them is masqueraded), the MTU for pod interfaces.

Neutral ground between the agent and the CNI plugin, which never import each other:
the composition root (``plainnet agent``) gives the agent a :class:`NodeStatePublisher`
and the CNI server its ``current``. The file ``<run dir>/subnet.json`` is written
atomically (temporary file, fsync, rename), so a reader never sees half of it; the
agent reads its own previous file at start, to reclaim the subnet it had.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from ipaddress import ip_network
from pathlib import Path

from plainnet.ipam.types import IPNetwork

FILE_NAME = "subnet.json"

log = logging.getLogger("plainnet.node_state")


@dataclass(frozen=True)
class NodeState:
    node: str
    cluster_cidrs: tuple[IPNetwork, ...]
    subnets: tuple[IPNetwork, ...]
    mtu: int
    backend: str
    #: Subnets this node held and lost to another node: nothing is handed out from
    #: them, and pods still holding addresses from them must be recreated.
    lost_subnets: tuple[IPNetwork, ...] = ()


def write_node_state(run_dir: Path, state: NodeState) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / FILE_NAME
    tmp = path.with_suffix(".tmp")
    document = {
        "node": state.node,
        "cluster_cidrs": [str(c) for c in state.cluster_cidrs],
        "subnets": [str(s) for s in state.subnets],
        "mtu": state.mtu,
        "backend": state.backend,
        "lost_subnets": [str(s) for s in state.lost_subnets],
    }
    with tmp.open("w") as out:
        json.dump(document, out, indent=1)
        out.write("\n")
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(path)
    return path


def read_node_state(run_dir: Path) -> NodeState | None:
    try:
        document = json.loads((run_dir / FILE_NAME).read_text())
        return NodeState(
            node=document["node"],
            cluster_cidrs=tuple(ip_network(c) for c in document["cluster_cidrs"]),
            subnets=tuple(ip_network(s) for s in document["subnets"]),
            mtu=int(document["mtu"]),
            backend=document["backend"],
            lost_subnets=tuple(ip_network(s) for s in document.get("lost_subnets", [])),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


class NodeStatePublisher:
    """The agent's hand-over of this node's facts: kept in memory for the CNI server
    running beside it (no file read per request), and written to ``subnet.json`` for
    the next start and for tools. Thread-safe to read: one reference, replaced whole."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self._current: NodeState | None = None

    def publish(self, state: NodeState) -> None:
        path = write_node_state(self.run_dir, state)
        self._current = state
        log.info("wrote %s", path)

    def current(self) -> NodeState | None:
        return self._current
