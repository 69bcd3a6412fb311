"""The one plan: the difference between the kernel state the agent wants (routes, and
where a backend has them, neighbour and FDB entries) and what the kernel holds. Pure.

Kernel layout: one nexthop object per (gateway, device) — ``ip nexthop`` with
plainnet's protocol — and one route per peer subnet pointing at it by id. The diff
works on sets and dicts, never on nested scans, so it is O(n) in the number of routes,
or O(changes) for an incremental pass that names what can differ.

Order of a :class:`Plan` when applied: set neighbour and FDB entries, create nexthops,
add or re-point routes, delete routes, delete nexthops, delete stale entries — a route
is never without its nexthop, nor a nexthop without the entries that make its gateway
reachable.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from plainnet.agent.kernel_model import (
    DesiredRoute,
    FdbKey,
    KernelNexthop,
    KernelRoute,
    LinkEntries,
    NeighbourKey,
    NexthopKey,
    nexthop_key,
)
from plainnet.ipam.types import IPAddress, IPNetwork

K = TypeVar("K")
V = TypeVar("V")

#: Nexthop ids plainnet picks start here ("PN" in the high half). Ids are shared by
#: everything in a namespace, so a new id is always checked against all existing ones.
NEXTHOP_ID_BASE = 0x504E0000


@dataclass
class KernelState:
    """What the kernel holds that is plainnet's (plus every nexthop id in use)."""

    routes: dict[IPNetwork, KernelRoute] = field(default_factory=dict)
    nexthops: dict[int, KernelNexthop] = field(default_factory=dict)  # ours, by id
    used_nexthop_ids: set[int] = field(default_factory=set)  # everyone's
    #: (gateway, device) -> id of our nexthop for it, valid after a full plan.
    nexthop_ids: dict[NexthopKey, int] = field(default_factory=dict)
    #: Where the search for a free nexthop id continues (ids are handed out in order).
    next_id_hint: int = NEXTHOP_ID_BASE
    #: Permanent neighbour and FDB entries of the backend's devices.
    entries: LinkEntries = field(default_factory=LinkEntries)
    #: The kernel adapter's digest of the route and nexthop messages this was read
    #: from; None once a plan has changed it (or for a state not read from a kernel).
    fingerprint: bytes | None = None


@dataclass
class Plan:
    """Applied in field order (see the module doc). A MAC whose FDB destination changes
    is cleared (``reset_fdb``) just before it is set again, so exactly the wanted
    destination remains."""

    set_neighbours: list[tuple[NeighbourKey, str]] = field(default_factory=list)
    reset_fdb: list[FdbKey] = field(default_factory=list)
    set_fdb: list[tuple[FdbKey, IPAddress]] = field(default_factory=list)
    #: (id, gateway, ifindex, onlink)
    create_nexthops: list[tuple[int, IPAddress, int, bool]] = field(default_factory=list)
    add_routes: list[tuple[IPNetwork, int, DesiredRoute]] = field(default_factory=list)
    replace_routes: list[tuple[IPNetwork, int, DesiredRoute]] = field(default_factory=list)
    delete_routes: list[KernelRoute] = field(default_factory=list)
    delete_nexthops: list[int] = field(default_factory=list)
    delete_fdb: list[FdbKey] = field(default_factory=list)
    delete_neighbours: list[NeighbourKey] = field(default_factory=list)

    def __bool__(self) -> bool:
        return any(getattr(self, name) for name in self.__dataclass_fields__)

    @property
    def route_changes(self) -> int:
        return len(self.add_routes) + len(self.replace_routes) + len(self.delete_routes)

    @property
    def entry_changes(self) -> int:
        return (
            len(self.set_neighbours)
            + len(self.set_fdb)
            + len(self.delete_fdb)
            + len(self.delete_neighbours)
        )

    def summary(self) -> str:
        return (
            f"+{len(self.add_routes)} routes, ~{len(self.replace_routes)} re-pointed, "
            f"-{len(self.delete_routes)} routes, +{len(self.create_nexthops)}/"
            f"-{len(self.delete_nexthops)} nexthops"
        )

    def entry_summary(self) -> str:
        return (
            f"+{len(self.set_neighbours)}/-{len(self.delete_neighbours)} neighbours, "
            f"+{len(self.set_fdb)}/-{len(self.delete_fdb)} FDB entries"
        )


def plan_changes(desired: Mapping[IPNetwork, DesiredRoute], kernel: KernelState) -> Plan:
    plan = Plan()
    # Reuse one of our nexthops per (gateway, device); extra copies go.
    nexthop_ids: dict[NexthopKey, int] = {}
    for nexthop in sorted(kernel.nexthops.values(), key=lambda n: n.id):
        if nexthop.gateway is None or nexthop.oif is None:
            plan.delete_nexthops.append(nexthop.id)
            continue
        key = nexthop_key(nexthop.gateway, nexthop.oif)
        if key in nexthop_ids:
            plan.delete_nexthops.append(nexthop.id)
        else:
            nexthop_ids[key] = nexthop.id
    needed: dict[NexthopKey, DesiredRoute] = {}
    for route in desired.values():
        needed.setdefault(route.nexthop, route)
    free_ids = _free_ids(kernel)
    for key in sorted(needed.keys() - nexthop_ids.keys()):
        new_id = next(free_ids)
        route = needed[key]
        plan.create_nexthops.append((new_id, route.gateway, route.ifindex, route.onlink))
        nexthop_ids[key] = new_id
    deleting = set(plan.delete_nexthops)
    for key, nexthop_id in nexthop_ids.items():
        if key not in needed and nexthop_id not in deleting:
            plan.delete_nexthops.append(nexthop_id)
    kernel.nexthop_ids = {k: i for k, i in nexthop_ids.items() if k in needed}

    for destination, route in desired.items():
        want = nexthop_ids[route.nexthop]
        have = kernel.routes.get(destination)
        if have is None:
            plan.add_routes.append((destination, want, route))
        elif have.nexthop_id != want:
            plan.replace_routes.append((destination, want, route))
    plan.delete_routes = [r for d, r in kernel.routes.items() if d not in desired]
    return plan


def plan_subset(
    desired: Mapping[IPNetwork, DesiredRoute],
    kernel: KernelState,
    destinations: set[IPNetwork],
    needed: Mapping[NexthopKey, int],
) -> Plan:
    """Like :func:`plan_changes`, for the routes of ``destinations`` only: the rest of the
    desired state is known not to have changed since the last full plan. ``needed``
    counts the desired routes per nexthop, so a nexthop goes when its last route goes."""
    plan = Plan()
    free_ids = _free_ids(kernel)
    created: dict[NexthopKey, int] = {}
    for destination in sorted(destinations, key=lambda d: (d.version, d)):
        route = desired.get(destination)
        have = kernel.routes.get(destination)
        if route is None:
            if have is not None:
                plan.delete_routes.append(have)
            continue
        want = kernel.nexthop_ids.get(route.nexthop) or created.get(route.nexthop)
        if want is None:
            want = next(free_ids)
            created[route.nexthop] = want
            plan.create_nexthops.append((want, route.gateway, route.ifindex, route.onlink))
        if have is None:
            plan.add_routes.append((destination, want, route))
        elif have.nexthop_id != want:
            plan.replace_routes.append((destination, want, route))
    # Only nexthops that served a changed route can have lost their last route.
    for destination in destinations:
        have = kernel.routes.get(destination)
        nexthop = kernel.nexthops.get(have.nexthop_id) if have and have.nexthop_id else None
        if nexthop is None:
            continue
        if nexthop.gateway is None or nexthop.oif is None:
            continue
        key = nexthop_key(nexthop.gateway, nexthop.oif)
        unused = needed.get(key, 0) <= 0
        ours = kernel.nexthop_ids.get(key) == nexthop.id
        if unused and ours and nexthop.id not in plan.delete_nexthops:
            plan.delete_nexthops.append(nexthop.id)
    return plan


def plan_entries(
    plan: Plan,
    desired: LinkEntries,
    kernel: LinkEntries,
    touched: tuple[set[NeighbourKey], set[FdbKey]] | None = None,
) -> None:
    """Add the entry differences to ``plan``, as dict operations: O(n), or O(changes)
    when ``touched`` names the only neighbour and FDB keys that can differ. A MAC whose
    kernel entry has a wrong or an extra destination is cleared and set again."""
    neighbours = (
        desired.neighbours.keys() | kernel.neighbours.keys() if touched is None else touched[0]
    )
    plan.set_neighbours, plan.delete_neighbours = _differences(
        neighbours, desired.neighbours, kernel.neighbours
    )
    macs = desired.fdb.keys() | kernel.fdb.keys() if touched is None else touched[1]
    changed, plan.delete_fdb = _differences(macs, desired.fdb, kernel.fdb)
    for key, destinations in changed:
        if kernel.fdb.get(key):
            plan.reset_fdb.append(key)
        plan.set_fdb.extend((key, destination) for destination in sorted(destinations))


def _differences(
    keys: Iterable[K], desired: Mapping[K, V], kernel: Mapping[K, V]
) -> tuple[list[tuple[K, V]], list[K]]:
    """Of ``keys``: those whose wanted value the kernel lacks (with that value), and
    those the kernel holds but nobody wants."""
    changed, unwanted = [], []
    for key in keys:
        want = desired.get(key)
        if want is None:
            if key in kernel:
                unwanted.append(key)
        elif want != kernel.get(key):
            changed.append((key, want))
    return changed, unwanted


def _free_ids(kernel: KernelState) -> Iterator[int]:
    """Ids nobody uses, from where the last search stopped (wrapping once to the base), so
    handing out k ids costs O(k), not O(ids in use)."""
    used = kernel.used_nexthop_ids
    for start, stop in ((kernel.next_id_hint, 0x100000000), (NEXTHOP_ID_BASE, kernel.next_id_hint)):
        for candidate in range(start, stop):
            if candidate not in used:
                kernel.next_id_hint = candidate + 1
                yield candidate


def apply_plan_to_state(
    plan: Plan, kernel: KernelState, failed: set[IPNetwork], protocol: int
) -> None:
    """Update a cached :class:`KernelState` with what a successfully applied plan did,
    so the next pass can diff without a dump. ``failed`` routes are left out."""
    if plan:
        kernel.fingerprint = None  # no longer what was read
    entries = kernel.entries
    for key, mac in plan.set_neighbours:
        entries.neighbours[key] = mac
    for key in plan.delete_neighbours:
        entries.neighbours.pop(key, None)
    for key in plan.reset_fdb + plan.delete_fdb:
        entries.fdb.pop(key, None)
    for key, destination in plan.set_fdb:
        entries.fdb[key] = entries.fdb.get(key, frozenset()) | {destination}
    for nexthop_id, gateway, ifindex, onlink in plan.create_nexthops:
        kernel.nexthops[nexthop_id] = KernelNexthop(nexthop_id, gateway, ifindex, protocol, onlink)
        kernel.used_nexthop_ids.add(nexthop_id)
        kernel.nexthop_ids[nexthop_key(gateway, ifindex)] = nexthop_id
    for destination, nexthop_id, route in plan.add_routes + plan.replace_routes:
        if destination not in failed:
            kernel.routes[destination] = KernelRoute(
                destination, nexthop_id, route.gateway, route.ifindex
            )
    for route in plan.delete_routes:
        kernel.routes.pop(route.destination, None)
    if plan.delete_nexthops:
        gone = set(plan.delete_nexthops)
        for nexthop_id in gone:
            kernel.nexthops.pop(nexthop_id, None)
            kernel.used_nexthop_ids.discard(nexthop_id)
        kernel.nexthop_ids = {k: i for k, i in kernel.nexthop_ids.items() if i not in gone}
        for destination in [d for d, r in kernel.routes.items() if r.nexthop_id in gone]:
            del kernel.routes[destination]  # the kernel drops routes with their nexthop
