"""The agent's kernel adapter: read and change plainnet's routes, read local networks.

Routes, nexthops and the backend devices' neighbour and FDB entries go through the
lean batched path in :mod:`plainnet.agent.netlink`; addresses and MTUs are read through
the same socket. Backend devices themselves are each backend's business
(:meth:`~plainnet.agent.backends.base.Backend.prepare`). Not thread-safe: the
reconciler uses one instance from its one kernel thread.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Collection, Iterable
from ipaddress import ip_interface
from pathlib import Path

from plainnet.agent import netlink
from plainnet.agent.kernel_model import KernelRefusal
from plainnet.agent.local_networks import LocalNetwork
from plainnet.agent.netlink import Request, RouteSocket
from plainnet.agent.plan import KernelState, Plan

log = logging.getLogger("plainnet.agent.kernel")

FORWARDING_SYSCTLS = {4: "net/ipv4/ip_forward", 6: "net/ipv6/conf/all/forwarding"}


def forwarding_off(versions: Iterable[int]) -> list[str]:
    """The forwarding sysctls (``net.ipv4.ip_forward`` style) of these IP versions that
    are not on in this namespace; one that cannot be read (IPv6 disabled) counts as off."""
    off = []
    for version in sorted(set(versions)):
        key = FORWARDING_SYSCTLS[version]
        try:
            on = Path("/proc/sys", key).read_text().strip() == "1"
        except OSError:
            on = False
        if not on:
            off.append(key.replace("/", "."))
    return off


class KernelRoutes:
    """plainnet's routes and nexthops in this process's network namespace."""

    def __init__(self, protocol: int) -> None:
        self.protocol = protocol
        self.sock = RouteSocket()

    def close(self) -> None:
        self.sock.close()

    def read_state(
        self, devices: Iterable[int] = (), known: KernelState | None = None
    ) -> KernelState:
        """plainnet's routes and nexthops (every nexthop id in use), and the permanent
        neighbour and FDB entries of ``devices``. ``known``: a state read here before;
        it is returned itself, nothing parsed, while the kernel's messages are those it
        was read from (:meth:`RouteSocket.fingerprint`) — an idle resync at 20,000 peers
        then costs the dumps, not a parse and a diff."""
        if known is not None and known.fingerprint is not None:
            now = self.sock.fingerprint(self.protocol, devices)
            if now == known.fingerprint:
                return known
        state = KernelState()
        digest = netlink.new_digest()
        for version in (4, 6):
            for route in self.sock.routes(version, self.protocol, digest):
                state.routes[route.destination] = route
        for nexthop in self.sock.nexthops(digest):
            state.used_nexthop_ids.add(nexthop.id)
            if nexthop.protocol == self.protocol:
                state.nexthops[nexthop.id] = nexthop
        if state.nexthops:
            state.next_id_hint = max(state.nexthops) + 1
        entries = state.entries
        for ifindex in sorted(devices):
            for address, mac in self.sock.neighbours(ifindex, digest).items():
                entries.neighbours[(ifindex, address)] = mac
            for mac, destinations in self.sock.fdb(ifindex, digest).items():
                entries.fdb[(ifindex, mac)] = destinations
        state.fingerprint = digest.digest()
        return state

    def apply(self, plan: Plan) -> list[KernelRefusal]:
        """Carry ``plan`` out in one ordered stream of batches (the order of its fields);
        returns what the kernel refused, for the caller to count, log and retry."""
        nl = netlink
        create = nl.NLM_F_CREATE | nl.NLM_F_REPLACE
        requests: list[Request] = []
        add = requests.append
        for (ifindex, address), mac in plan.set_neighbours:
            body = nl.neighbour_body(ifindex, address, mac)
            add((nl.RTM_NEWNEIGH, create, body, "neighbour", (ifindex, address)))
        for ifindex, mac in plan.reset_fdb:
            add((nl.RTM_DELNEIGH, 0, nl.fdb_body(ifindex, mac), "fdb", (ifindex, mac)))
        for (ifindex, mac), destination in plan.set_fdb:
            body = nl.fdb_body(ifindex, mac, destination)
            add((nl.RTM_NEWNEIGH, create, body, "fdb", (ifindex, mac)))
        for nexthop_id, gateway, ifindex, onlink in plan.create_nexthops:
            body = nl.nexthop_body(nexthop_id, gateway, ifindex, self.protocol, onlink=onlink)
            add((nl.RTM_NEWNEXTHOP, create, body, "nexthop", nexthop_id))
        for destination, nexthop_id, _ in plan.add_routes:
            # EXCL: never replace a route somebody else owns for the same prefix.
            body = nl.route_body(destination, self.protocol, nexthop_id)
            add((nl.RTM_NEWROUTE, nl.NLM_F_CREATE | nl.NLM_F_EXCL, body, "route", destination))
        for destination, nexthop_id, _ in plan.replace_routes:
            body = nl.route_body(destination, self.protocol, nexthop_id)
            add((nl.RTM_NEWROUTE, nl.NLM_F_REPLACE, body, "route", destination))
        for route in plan.delete_routes:
            body = nl.route_delete_body(route, self.protocol)
            add((nl.RTM_DELROUTE, 0, body, "route", route.destination))
        for nexthop_id in plan.delete_nexthops:
            body = nl.nexthop_body(nexthop_id, None, None, 0, family=socket.AF_UNSPEC)
            add((nl.RTM_DELNEXTHOP, 0, body, "nexthop", nexthop_id))
        for ifindex, mac in plan.delete_fdb:
            add((nl.RTM_DELNEIGH, 0, nl.fdb_body(ifindex, mac), "fdb", (ifindex, mac)))
        for ifindex, address in plan.delete_neighbours:
            body = nl.neighbour_body(ifindex, address)
            add((nl.RTM_DELNEIGH, 0, body, "neighbour", (ifindex, address)))
        return self.sock.apply(requests, ignore=frozenset({errno.ESRCH, errno.ENOENT}))

    def remove_all(self) -> tuple[int, int]:
        """Delete every plainnet route and nexthop; returns how many of each."""
        state = self.read_state()  # routes and nexthops: no devices
        plan = Plan(
            delete_routes=list(state.routes.values()), delete_nexthops=sorted(state.nexthops)
        )
        self.apply(plan)
        return len(plan.delete_routes), len(plan.delete_nexthops)

    def local_networks(self, own_devices: Collection[str] = ()) -> list[LocalNetwork]:
        """The networks this node's interfaces are on (global scope, not loopback). The
        addresses of ``own_devices`` (backend devices: VTEP addresses) are plainnet's
        own, not networks of the node."""
        names = self.sock.links()
        found = []
        for entry in self.sock.addresses():
            if entry.scope != 0 or entry.address.is_loopback:
                continue
            interface = ip_interface(f"{entry.address}/{entry.prefixlen}")
            name = names.get(entry.ifindex, ("?", 0))[0]
            if name in own_devices:
                continue
            found.append(LocalNetwork(interface.network, entry.ifindex, name, interface.ip))
        return found

    def event_socket(self) -> socket.socket:
        """Kernel notifications of this namespace (links, addresses, routes, nexthops,
        neighbours), non-blocking; the reactor filters them."""
        return netlink.subscribe_events(neighbours=True)

    def link_index(self, name: str) -> int | None:
        return next((i for i, (n, _) in self.sock.links().items() if n == name), None)

    def interface_mtu(self, ifindex: int) -> int:
        return self.sock.links()[ifindex][1]

    def enable_forwarding(self, versions: Iterable[int] = (4, 6)) -> list[str]:
        """Turn on forwarding of these IP versions in this namespace (a node routes for
        its pods); returns what could not be turned on, as sentences — never raises: a
        read-only /proc/sys (an unprivileged container) is reported, not fatal."""
        problems = []
        for key in (FORWARDING_SYSCTLS[v] for v in sorted(set(versions))):
            path = Path("/proc/sys", key)
            name = key.replace("/", ".")
            try:
                if path.read_text().strip() != "1":
                    path.write_text("1")
                    log.info("enabled %s", name)
            except OSError as exc:
                problems.append(
                    f"{name} is off and cannot be turned on ({exc.strerror}): pods on "
                    f"this node cannot reach other nodes; run `sysctl -w {name}=1`"
                )
        return problems
