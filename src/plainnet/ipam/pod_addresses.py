"""Pod addresses inside one node subnet: which address a pod gets, and how it is kept.

Policy and persistence are split, as in the CNI ``host-local`` plugin: the
:class:`PodAddressAllocator` decides *which* address; a :class:`PodAddressStore` decides
*how reservations are kept*. A store hands out a :class:`PodAddressState` inside a
transaction — exclusive for its duration and committed all at once — so the allocator
never sees a half-applied change, and swapping the store changes nothing here.

Reserved in every node subnet: the network address, the gateway (first usable address,
held by the node's bridge) and, for IPv4, the broadcast address.

Allocation continues after the address handed out last instead of taking the lowest
free one, so a crash-looping pod does not get its old address back at once — a
connection to the dead pod's address cannot reach the new pod by accident. Allocation
is idempotent per (container id, interface name): a retried ADD gets the same address.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import Protocol, TypeVar

from plainnet.ipam.errors import AddressExhaustedError, IpamError
from plainnet.ipam.types import IPAddress, IPNetwork

T = TypeVar("T")

#: The network a reservation written before reservations named theirs belongs to: the
#: network ``plainnet cni install`` configures.
LEGACY_NETWORK = "plainnet"


@dataclass(frozen=True, order=True)
class Owner:
    """Who holds a pod address: the container and the interface inside it (which tell
    one attachment from every other), and the CNI network it was handed out for (so GC
    of one network never releases another's)."""

    container_id: str
    ifname: str
    network: str = field(default=LEGACY_NETWORK, compare=False)


@dataclass(frozen=True)
class Reservation:
    address: IPAddress
    owner: Owner


@dataclass
class PodAddressState:
    """All reservations of one node subnet, as a store loads and commits them."""

    reservations: dict[IPAddress, Owner] = field(default_factory=dict)
    last_reserved: IPAddress | None = None

    def address_of(self, owner: Owner) -> IPAddress | None:
        for address, holder in self.reservations.items():
            if holder == owner:
                return address
        return None


class PodAddressStore(Protocol):
    """Keeps the :class:`PodAddressState` of one node subnet."""

    def run(self, change: Callable[[PodAddressState], T]) -> T:
        """Apply ``change`` to the state with exclusive access and return its result,
        committed before this returns; a change that raises is discarded (and its
        exception raised here). Changes of concurrent callers may share one commit."""
        ...


def first_usable(subnet: IPNetwork) -> IPAddress:
    """The gateway address of a node subnet (the node's bridge holds it)."""
    return subnet.network_address + 1


def reserved_addresses(subnet: IPNetwork) -> frozenset[IPAddress]:
    """Addresses of ``subnet`` that are never given to a pod."""
    reserved = {subnet.network_address, first_usable(subnet)}
    if subnet.version == 4:
        reserved.add(subnet.broadcast_address)
    return frozenset(reserved)


def pod_capacity(subnet: IPNetwork) -> int:
    """How many pod addresses ``subnet`` holds."""
    return subnet.num_addresses - len(reserved_addresses(subnet))


def next_free_address(
    subnet: IPNetwork,
    taken: set[IPAddress] | dict[IPAddress, Owner],
    last_reserved: IPAddress | None,
) -> IPAddress:
    """The first address after ``last_reserved`` (wrapping) that is neither reserved nor
    taken. Visits at most ``len(taken) + 4`` addresses, so a /64 costs no more than a /24.
    """
    reserved = reserved_addresses(subnet)
    held = sum(1 for address in taken if address in subnet and address not in reserved)
    if held >= pod_capacity(subnet):
        raise AddressExhaustedError(
            f"node subnet {subnet} has no free pod address: all {pod_capacity(subnet):,} "
            f"are in use; delete pods or give the node a larger subnet"
        )
    base = int(subnet.network_address)
    size = subnet.num_addresses
    if last_reserved is not None and last_reserved in subnet:
        offset = int(last_reserved) - base + 1
    else:
        offset = 0
    while True:
        candidate = ip_address(base + offset % size)
        if candidate not in reserved and candidate not in taken:
            return candidate
        offset += 1


class PodAddressAllocator:
    """Hands out, releases and garbage-collects pod addresses of one node subnet."""

    def __init__(self, subnet: IPNetwork, store: PodAddressStore) -> None:
        self.subnet = subnet
        self.store = store

    @property
    def gateway(self) -> IPAddress:
        return first_usable(self.subnet)

    def allocate(self, container_id: str, ifname: str, network: str = LEGACY_NETWORK) -> IPAddress:
        """The address of (container_id, ifname): the one it holds, or a new one."""
        owner = _owner(container_id, ifname, network)

        def take(state: PodAddressState) -> IPAddress:
            existing = state.address_of(owner)
            if existing is not None and existing in self.subnet:
                return existing
            address = next_free_address(self.subnet, state.reservations, state.last_reserved)
            state.reservations[address] = owner
            state.last_reserved = address
            return address

        return self.store.run(take)

    def reserve(self, address: IPAddress, container_id: str, ifname: str) -> None:
        """Reserve a specific address (a static request, or restoring known state)."""
        owner = _owner(container_id, ifname)
        if address not in self.subnet or address in reserved_addresses(self.subnet):
            raise IpamError(f"address {address} is not a pod address of node subnet {self.subnet}")

        def hold(state: PodAddressState) -> None:
            holder = state.reservations.get(address)
            if holder is not None and holder != owner:
                raise IpamError(
                    f"address {address} is held by container {holder.container_id} "
                    f"interface {holder.ifname}"
                )
            state.reservations[address] = owner

        self.store.run(hold)

    def release(self, container_id: str, ifname: str | None = None) -> list[IPAddress]:
        """Release what ``container_id`` holds (only on ``ifname`` if given). Releasing
        what is not held is not an error: CNI DEL must be idempotent."""
        return self._drop(
            lambda owner: owner.container_id == container_id and ifname in (None, owner.ifname)
        )

    def garbage_collect(
        self, valid: set[tuple[str, str]], network: str = LEGACY_NETWORK
    ) -> list[IPAddress]:
        """Release every reservation of ``network`` whose (container id, interface) is
        not in ``valid``: the leak a crash or reboot leaves behind when DEL never ran.
        Another network's reservations are not this GC's business (CNI 1.1)."""
        return self._drop(
            lambda owner: (
                owner.network == network and (owner.container_id, owner.ifname) not in valid
            )
        )

    def _drop(self, unwanted: Callable[[Owner], bool]) -> list[IPAddress]:
        def drop(state: PodAddressState) -> list[IPAddress]:
            gone = [address for address, owner in state.reservations.items() if unwanted(owner)]
            for address in gone:
                del state.reservations[address]
            return sorted(gone)

        return self.store.run(drop)

    def reservations(self) -> list[Reservation]:
        return self.store.run(
            lambda state: [
                Reservation(address, owner) for address, owner in sorted(state.reservations.items())
            ]
        )


def _owner(container_id: str, ifname: str, network: str = LEGACY_NETWORK) -> Owner:
    if not container_id or not ifname:
        raise IpamError("a pod address needs a container id and an interface name")
    return Owner(container_id, ifname, network)
