"""Start-up: from settings and a datastore to this node's context.

Read the cluster's network config, load its backend, find this node's address and
uplink, claim the node's subnet (reclaiming the previous one after a restart), publish
the node's facts for the CNI plugin, turn on forwarding, read every record. Each step
that talks to the datastore may fail and is retried by the caller; a configuration
that cannot work (an unknown backend, a node address on no interface) is a
:class:`~plainnet.errors.PlainnetError` that ends start-up with one line.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from plainnet.agent import ROUTE_PROTOCOL
from plainnet.agent.backends import load_backend
from plainnet.agent.backends.base import Backend, NodeIdentity
from plainnet.agent.local_networks import LocalNetwork, node_networks, on_link_network
from plainnet.datastore.records import Datastore, NodeClaim, PeerRecord
from plainnet.errors import PlainnetError
from plainnet.ipam.types import IPAddress, IPNetwork
from plainnet.node_state import NodeState, read_node_state

log = logging.getLogger("plainnet.agent")


@dataclass
class AgentSettings:
    node_name: str
    node_addresses: tuple[IPAddress, ...] = ()
    run_dir: Path = Path("/run/plainnet")
    resync_seconds: float = 60.0
    renew_seconds: float = 3600.0
    retry_seconds: float = 1.0
    protocol: int = ROUTE_PROTOCOL


@dataclass(frozen=True)
class NodeContext:
    """What start-up found out and every later step works with."""

    identity: NodeIdentity
    own: PeerRecord
    backend: Backend
    cluster_cidrs: list[IPNetwork]
    claim: NodeClaim = field(repr=False)
    #: The cluster's node subnet length per family, where the datastore knows it.
    node_prefixes: dict[int, int] = field(default_factory=dict)
    #: Subnets this node held and lost to another node since it started.
    lost_subnets: tuple[IPNetwork, ...] = ()

    def with_own(self, own: PeerRecord) -> NodeContext:
        """The context for ``own``: at the claim, and when a restored record brought
        another subnet."""
        return replace(self, identity=replace(self.identity, subnets=own.subnets), own=own)

    @property
    def state(self) -> NodeState:
        """This node's facts for the CNI side."""
        return NodeState(
            node=self.identity.name,
            cluster_cidrs=tuple(self.cluster_cidrs),
            subnets=self.own.subnets,
            # for pods: with an overlay, what still fits once encapsulated
            mtu=self.backend.pod_mtu(self.identity),
            backend=self.backend.name,
            lost_subnets=self.lost_subnets,
        )


async def start_node(
    settings: AgentSettings,
    datastore: Datastore,
    local: list[LocalNetwork],
    mtus: Mapping[int, int],
) -> NodeContext:
    """``local``: this node's networks (its own devices' left out); ``mtus``: their
    interfaces' MTUs, by ifindex."""
    network = await datastore.network_config()
    backend = load_backend(network.backend, network.backend_options)
    previous = read_node_state(settings.run_dir)
    addresses = settings.node_addresses or pick_node_addresses(
        node_networks(local, network.cluster_cidrs, previous.subnets if previous else ()),
        await datastore.node_addresses(),
    )
    uplink = on_link_network(addresses[0], local)
    if uplink is None:
        raise PlainnetError(
            f"node address {addresses[0]} is not on any interface of "
            f"this node; pass --node-ip with one of its addresses"
        )
    identity = NodeIdentity(settings.node_name, tuple(addresses), uplink, mtus[uplink.ifindex])
    published = backend.published_data(identity)
    claim = NodeClaim(
        node=settings.node_name,
        addresses=tuple(addresses),
        backend=backend.record_type,
        backend_data=published.v4,
        backend_data_v6=published.v6,
        previous_subnets=previous.subnets if previous else (),
    )
    own = await datastore.claim(claim)
    cluster = list(network.cluster_cidrs)
    # a subnet held before this start and not got back (another node took it while
    # this one was away past its lease) is lost
    newly, lost = (
        subnets_lost(previous.subnets, previous.lost_subnets, own.subnets) if previous else ((), ())
    )
    if newly:
        log.error(
            "this node held %s before it restarted and another node holds it now: pods "
            "with addresses from it must be recreated",
            ", ".join(map(str, newly)),
        )
    prefixes = dict(network.node_prefixes)
    return NodeContext(identity, own, backend, cluster, claim, prefixes, lost).with_own(own)


def subnets_lost(
    held: tuple[IPNetwork, ...], lost_before: tuple[IPNetwork, ...], now: tuple[IPNetwork, ...]
) -> tuple[tuple[IPNetwork, ...], tuple[IPNetwork, ...]]:
    """(newly lost, all lost): the subnets ``held`` before and not ``now``, and with them
    the ones lost before — except any this node holds again."""
    newly = tuple(s for s in held if s not in now)
    return newly, tuple(dict.fromkeys(s for s in newly + lost_before if s not in now))


def pick_node_addresses(
    local: list[LocalNetwork], known: tuple[IPAddress, ...] = ()
) -> tuple[IPAddress, ...]:
    """Without --node-ip: the addresses the datastore knows this node by (a Node's
    InternalIPs) that are on one of its interfaces; else those of the one interface
    that has global addresses (plainnet's own devices are not among ``local``)."""
    addresses: dict[int, IPAddress] = {}
    for network in local:
        if network.address in known:
            addresses.setdefault(network.address.version, network.address)
    if not addresses:
        interfaces = {network.ifname for network in local}
        if len(interfaces) != 1:
            raise PlainnetError(
                "cannot tell which address is this node's: interfaces "
                f"{', '.join(sorted(interfaces)) or '(none)'} have addresses; pass --node-ip"
            )
        for network in local:
            addresses.setdefault(network.address.version, network.address)
    return tuple(addresses[v] for v in sorted(addresses))


__all__ = ["AgentSettings", "NodeContext", "pick_node_addresses", "start_node", "subnets_lost"]
