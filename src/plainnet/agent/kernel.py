"""The agent's kernel adapter: read and change plainnet's routes, read local networks.

Routes, nexthops and the VXLAN device's neighbour and FDB entries go through the lean
batched path in :mod:`plainnet.agent.netlink`; addresses and MTUs are read through the
same socket (pyroute2's synchronous API cannot run inside the agent's asyncio loop).
The VXLAN device itself is managed in :mod:`plainnet.agent.vxlan_device`.
"""

from __future__ import annotations

import errno
import logging
import socket
from ipaddress import ip_interface, ip_network
from pathlib import Path

from plainnet.agent import netlink
from plainnet.agent.backends.vxlan import DEVICE_NAME, OverlayEntries, OverlayPlan
from plainnet.agent.netlink import NetlinkRequestError, RouteSocket
from plainnet.agent.reconcile import KernelState, Plan
from plainnet.agent.routing import LocalNetwork
from plainnet.ipam.types import IPNetwork

log = logging.getLogger("plainnet.agent.kernel")

FORWARDING_SYSCTLS = ("net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding")


class KernelRoutes:
    """plainnet's routes and nexthops in this process's network namespace."""

    def __init__(self, protocol: int) -> None:
        self.protocol = protocol
        self.sock = RouteSocket()

    def close(self) -> None:
        self.sock.close()

    def read_state(self) -> KernelState:
        state = KernelState()
        for version in (4, 6):
            for route in self.sock.routes(version, self.protocol):
                state.routes[route.destination] = route
        for nexthop in self.sock.nexthops():
            state.used_nexthop_ids.add(nexthop.id)
            if nexthop.protocol == self.protocol:
                state.nexthops[nexthop.id] = nexthop
        if state.nexthops:
            state.next_id_hint = max(state.nexthops) + 1
        return state

    def read_overlay(self, ifindex: int) -> OverlayEntries:
        """The permanent neighbour and FDB entries of the VXLAN device ``ifindex``."""
        return OverlayEntries(self.sock.neighbours(ifindex), self.sock.fdb(ifindex))

    def apply(
        self, plan: Plan, overlay: OverlayPlan | None = None, overlay_ifindex: int = 0
    ) -> tuple[dict[IPNetwork, NetlinkRequestError], int]:
        """Carry ``plan`` (and ``overlay``, on device ``overlay_ifindex``) out, in one
        ordered stream of batches: neighbour and FDB entries first, then nexthops and
        routes, stale entries last. Returns the routes the kernel refused, by
        destination, and the number of refused requests in all; refusals are logged and
        left for the next pass."""
        nl = netlink
        requests: list[tuple[int, int, bytes, str]] = []
        create = nl.NLM_F_CREATE | nl.NLM_F_REPLACE
        if overlay is not None:
            for address, mac in overlay.set_neighbours:
                requests.append(
                    (
                        nl.RTM_NEWNEIGH,
                        create,
                        nl.neighbour_body(overlay_ifindex, address, mac),
                        f"neighbour {address} lladdr {mac}",
                    )
                )
            for mac in overlay.reset_fdb:
                body = nl.fdb_body(overlay_ifindex, mac)
                requests.append((nl.RTM_DELNEIGH, 0, body, f"fdb {mac}"))
            for mac, destination in overlay.set_fdb:
                body = nl.fdb_body(overlay_ifindex, mac, destination)
                requests.append((nl.RTM_NEWNEIGH, create, body, f"fdb {mac} dst {destination}"))
        for nexthop_id, gateway, ifindex, onlink in plan.create_nexthops:
            requests.append(
                (
                    nl.RTM_NEWNEXTHOP,
                    create,
                    nl.nexthop_body(nexthop_id, gateway, ifindex, self.protocol, onlink=onlink),
                    f"nexthop {nexthop_id} via {gateway}",
                )
            )
        for destination, nexthop_id, _ in plan.add_routes:
            # EXCL: never replace a route somebody else owns for the same prefix.
            requests.append(
                (
                    nl.RTM_NEWROUTE,
                    nl.NLM_F_CREATE | nl.NLM_F_EXCL,
                    nl.route_body(destination, self.protocol, nexthop_id),
                    f"route {destination}",
                )
            )
        for destination, nexthop_id, _ in plan.replace_routes:
            requests.append(
                (
                    nl.RTM_NEWROUTE,
                    nl.NLM_F_REPLACE,
                    nl.route_body(destination, self.protocol, nexthop_id),
                    f"route {destination}",
                )
            )
        for route in plan.delete_routes:
            requests.append(
                (
                    nl.RTM_DELROUTE,
                    0,
                    nl.route_delete_body(route, self.protocol),
                    f"route {route.destination}",
                )
            )
        for nexthop_id in plan.delete_nexthops:
            requests.append(
                (
                    nl.RTM_DELNEXTHOP,
                    0,
                    nl.nexthop_body(nexthop_id, None, None, 0, family=socket.AF_UNSPEC),
                    f"nexthop {nexthop_id}",
                )
            )
        if overlay is not None:
            for mac in overlay.delete_fdb:
                body = nl.fdb_body(overlay_ifindex, mac)
                requests.append((nl.RTM_DELNEIGH, 0, body, f"fdb {mac}"))
            for address in overlay.delete_neighbours:
                body = nl.neighbour_body(overlay_ifindex, address)
                requests.append((nl.RTM_DELNEIGH, 0, body, f"neighbour {address}"))
        failures = self.sock.apply(requests, ignore=frozenset({errno.ESRCH, errno.ENOENT}))
        refused: dict[IPNetwork, NetlinkRequestError] = {}
        for failure in failures:
            log.warning("kernel refused %s", failure.strerror)
            if failure.what.startswith("route "):
                refused[ip_network(failure.what.removeprefix("route "))] = failure
        return refused, len(failures)

    def remove_all(self) -> tuple[int, int]:
        """Delete every plainnet route and nexthop; returns how many of each."""
        state = self.read_state()
        plan = Plan(
            delete_routes=list(state.routes.values()), delete_nexthops=sorted(state.nexthops)
        )
        self.apply(plan)
        return len(plan.delete_routes), len(plan.delete_nexthops)

    def local_networks(self) -> list[LocalNetwork]:
        """The networks this node's interfaces are on (global scope, not loopback). The
        VXLAN device's VTEP addresses are plainnet's own, not a network of the node."""
        names = self.sock.links()
        found = []
        for entry in self.sock.addresses():
            if entry.scope != 0 or entry.address.is_loopback:
                continue
            interface = ip_interface(f"{entry.address}/{entry.prefixlen}")
            name = names.get(entry.ifindex, ("?", 0))[0]
            if name == DEVICE_NAME:
                continue
            found.append(LocalNetwork(interface.network, entry.ifindex, name, interface.ip))
        return found

    def link_index(self, name: str) -> int | None:
        return next((i for i, (n, _) in self.sock.links().items() if n == name), None)

    def interface_mtu(self, ifindex: int) -> int:
        return self.sock.links()[ifindex][1]


def enable_forwarding() -> None:
    """Turn on IPv4 and IPv6 forwarding in this namespace: a node routes for its pods."""
    for key in FORWARDING_SYSCTLS:
        path = Path("/proc/sys", key)
        if path.read_text().strip() != "1":
            path.write_text("1")
            log.info("enabled %s", key.replace("/", "."))
