"""Split a cluster CIDR into node subnets: allocate, occupy, release.

The space is never materialised. A node subnet is identified by its *index*: subnet
``i`` of cluster ``C`` split into ``/m`` starts at ``C.network_address + i * 2**(bits-m)``.
Only allocated indices are kept (a set), so a ``/32`` IPv6 cluster split into ``/64``s
(2**32 subnets) costs memory proportional to the nodes that exist, not to the space.

Allocation is *next-fit*, as in kube-controller-manager's ``cidrset``: the search starts
after the subnet handed out last and wraps around. Subnets released by deleted nodes
are therefore not handed out again until the rest of the space has been used, so a
stale route to a deleted node's subnet has time to disappear before a new node gets
it. A search visits at most ``len(allocated) + 1`` indices, and a full sequential
allocation is O(1) per subnet.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from ipaddress import ip_network

from plainnet.ipam.errors import (
    SubnetConflictError,
    SubnetExhaustedError,
    SubnetOutOfRangeError,
)
from plainnet.ipam.types import IPNetwork, family_name

#: Node mask sizes kube-controller-manager uses when ``--node-cidr-mask-size`` is unset.
DEFAULT_NODE_PREFIX = {4: 24, 6: 64}

#: The longest node prefix that still leaves at least one pod address once the network
#: address, the gateway and (IPv4) the broadcast address are reserved.
LONGEST_NODE_PREFIX = {4: 30, 6: 126}


def validate_split(cluster: IPNetwork, node_prefix: int) -> None:
    """Refuse a node mask that cannot split ``cluster`` into usable node subnets."""
    if node_prefix <= cluster.prefixlen:
        raise SubnetOutOfRangeError(
            f"node mask /{node_prefix} must be longer than the mask of cluster CIDR "
            f"{cluster} (/{cluster.prefixlen}): each node needs a part of the cluster CIDR"
        )
    longest = LONGEST_NODE_PREFIX[cluster.version]
    if node_prefix > longest:
        raise SubnetOutOfRangeError(
            f"node mask /{node_prefix} leaves no pod addresses in a {family_name(cluster)} "
            f"node subnet: use /{longest} or shorter"
        )


class SubnetPool:
    """The node subnets of one cluster CIDR (one address family)."""

    def __init__(self, cluster: IPNetwork, node_prefix: int | None = None) -> None:
        if node_prefix is None:
            node_prefix = DEFAULT_NODE_PREFIX[cluster.version]
        validate_split(cluster, node_prefix)
        self.cluster = cluster
        self.node_prefix = node_prefix
        self._host_bits = cluster.max_prefixlen - node_prefix
        self._base = int(cluster.network_address)
        self._network_type = type(cluster)
        #: How many node subnets the cluster CIDR holds.
        self.size = 1 << (node_prefix - cluster.prefixlen)
        self._allocated: set[int] = set()
        self._next_candidate = 0

    def __repr__(self) -> str:
        return (
            f"SubnetPool({self.cluster}, /{self.node_prefix}: "
            f"{len(self._allocated)} of {self.size} allocated)"
        )

    @property
    def version(self) -> int:
        return self.cluster.version

    @property
    def allocated_count(self) -> int:
        return len(self._allocated)

    @property
    def free_count(self) -> int:
        return self.size - len(self._allocated)

    def subnet_at(self, index: int) -> IPNetwork:
        """Node subnet number ``index`` (0-based) of the cluster CIDR."""
        return self._network_type((self._base + (index << self._host_bits), self.node_prefix))

    def index_of(self, subnet: IPNetwork) -> int:
        """The index of ``subnet``; refuses anything that is not exactly one node subnet."""
        start = int(subnet.network_address)
        if (
            subnet.version != self.cluster.version
            or subnet.prefixlen < self.cluster.prefixlen
            or not self._base <= start < self._base + (self.size << self._host_bits)
        ):
            raise SubnetOutOfRangeError(f"subnet {subnet} is outside cluster CIDR {self.cluster}")
        if subnet.prefixlen != self.node_prefix:
            raise SubnetOutOfRangeError(
                f"subnet {subnet} does not match the node mask /{self.node_prefix} "
                f"of cluster CIDR {self.cluster}"
            )
        return (start - self._base) >> self._host_bits

    def is_allocated(self, subnet: IPNetwork) -> bool:
        return self.index_of(subnet) in self._allocated

    def allocate(self) -> IPNetwork:
        """Hand out the next free node subnet after the one handed out last."""
        if len(self._allocated) >= self.size:
            raise self.exhausted_error()
        index = self._next_candidate
        while index in self._allocated:
            index = (index + 1) % self.size
        self._take(index)
        return self.subnet_at(index)

    def exhausted_error(self) -> SubnetExhaustedError:
        return SubnetExhaustedError(
            f"cluster CIDR {self.cluster} has no free node subnet: all {self.size:,} "
            f"/{self.node_prefix} subnets are allocated; use a larger cluster CIDR "
            f"or a longer node mask"
        )

    def occupy(self, subnet: IPNetwork) -> None:
        """Mark ``subnet`` as allocated, e.g. when rebuilding state from existing nodes."""
        index = self.index_of(subnet)
        if index in self._allocated:
            raise SubnetConflictError(f"subnet {subnet} is already allocated")
        self._take(index)

    def release(self, subnet: IPNetwork) -> None:
        """Return ``subnet`` to the pool."""
        index = self.index_of(subnet)
        if index not in self._allocated:
            raise SubnetConflictError(f"subnet {subnet} is not allocated, cannot release it")
        self._allocated.remove(index)

    def resume_after(self, subnet: IPNetwork) -> None:
        """Continue the next-fit search after ``subnet`` (handed out last elsewhere)."""
        self._next_candidate = (self.index_of(subnet) + 1) % self.size

    def allocated(self) -> Iterator[IPNetwork]:
        """The allocated subnets, in address order."""
        return (self.subnet_at(index) for index in sorted(self._allocated))

    def _take(self, index: int) -> None:
        self._allocated.add(index)
        self._next_candidate = (index + 1) % self.size


class NodeSubnetAllocator:
    """Node subnets for a single- or dual-stack cluster: one subnet per family, atomically.

    ``allocate()`` returns one subnet from every pool or raises without changing any
    pool, so a node is never left with an IPv4 subnet but no IPv6 one.
    """

    def __init__(
        self,
        cluster_cidrs: Sequence[IPNetwork],
        node_prefixes: dict[int, int] | None = None,
    ) -> None:
        if not cluster_cidrs:
            raise SubnetOutOfRangeError("at least one cluster CIDR is needed")
        versions = [cidr.version for cidr in cluster_cidrs]
        if len(set(versions)) != len(versions):
            raise SubnetOutOfRangeError(
                "at most one cluster CIDR per address family: got "
                + ", ".join(str(cidr) for cidr in cluster_cidrs)
            )
        prefixes = node_prefixes or {}
        self.pools: tuple[SubnetPool, ...] = tuple(
            SubnetPool(cidr, prefixes.get(cidr.version)) for cidr in cluster_cidrs
        )

    def pool_for(self, subnet: IPNetwork) -> SubnetPool:
        for pool in self.pools:
            if pool.version == subnet.version:
                return pool
        raise SubnetOutOfRangeError(
            f"subnet {subnet} is {family_name(subnet)}, but the cluster has no "
            f"{family_name(subnet)} CIDR ({', '.join(str(p.cluster) for p in self.pools)})"
        )

    def allocate(self) -> tuple[IPNetwork, ...]:
        """One new subnet per family, in the order of the cluster CIDRs — or none."""
        for pool in self.pools:
            if pool.free_count == 0:
                raise pool.exhausted_error()
        return tuple(pool.allocate() for pool in self.pools)

    def occupy(self, subnets: Iterable[IPNetwork]) -> None:
        """Mark a node's subnets allocated; all of them or, on a conflict, none."""
        subnets = list(subnets)
        for subnet in subnets:
            if self.pool_for(subnet).is_allocated(subnet):
                raise SubnetConflictError(f"subnet {subnet} is already allocated")
        if len({subnet.version for subnet in subnets}) != len(subnets):
            raise SubnetConflictError(
                "a node holds at most one subnet per family: got "
                + ", ".join(str(subnet) for subnet in subnets)
            )
        for subnet in subnets:
            self.pool_for(subnet).occupy(subnet)

    def resume_after(self, subnets: Iterable[IPNetwork]) -> None:
        """Continue each family's next-fit search after its subnet in ``subnets``."""
        for subnet in subnets:
            self.pool_for(subnet).resume_after(subnet)

    def release(self, subnets: Iterable[IPNetwork]) -> None:
        subnets = list(subnets)
        for subnet in subnets:
            if not self.pool_for(subnet).is_allocated(subnet):
                raise SubnetConflictError(f"subnet {subnet} is not allocated, cannot release it")
        for subnet in subnets:
            self.pool_for(subnet).release(subnet)


def parse_network(text: str) -> IPNetwork:
    """Parse a CIDR strictly (no host bits), with one-line errors that say how to fix it."""
    try:
        return ip_network(text.strip(), strict=True)
    except ValueError as exc:
        try:
            loose = ip_network(text.strip(), strict=False)
        except ValueError:
            raise ValueError("not a valid network") from exc
        raise ValueError(f"has host bits set, did you mean {loose}?") from exc


__all__ = [
    "DEFAULT_NODE_PREFIX",
    "LONGEST_NODE_PREFIX",
    "NodeSubnetAllocator",
    "SubnetPool",
    "parse_network",
    "validate_split",
]
