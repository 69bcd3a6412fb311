"""The kernel adapter against a real kernel: an unchanged kernel is not parsed again,
and any change to a route or nexthop of plainnet's is seen (``ip`` is the oracle that
changes the kernel behind the adapter's back)."""

from __future__ import annotations

import socket
import time

from plainnet.agent import ROUTE_PROTOCOL
from plainnet.agent.kernel import KernelRoutes
from plainnet.agent.netlink import RouteSocket
from plainnet.lab import netns


def adapter_in(namespace: str) -> KernelRoutes:
    kernel = KernelRoutes(ROUTE_PROTOCOL)
    kernel.sock.close()
    kernel.sock = RouteSocket(
        netns.socket_in(namespace, socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    )
    return kernel


def test_an_unchanged_kernel_is_handed_back_unparsed_and_every_change_is_seen(lab):
    host = lab.host("host1")
    gateway = str(lab.host("host2").ipv4)
    proto = str(ROUTE_PROTOCOL)

    def ip(*args: str) -> None:
        lab.run("host1", ["ip", *args], check=True)

    ip("nexthop", "add", "id", "1347289089", "via", gateway, "dev", "eth0", "proto", proto)
    ip("route", "add", "10.244.7.0/24", "nhid", "1347289089", "proto", proto)
    ip("-6", "route", "add", "fd44::/64", "dev", "eth0", "proto", proto)
    kernel = adapter_in(host.namespace)
    try:
        first = kernel.read_state()
        assert {str(d) for d in first.routes} == {"10.244.7.0/24", "fd44::/64"}
        assert first.fingerprint is not None
        assert kernel.read_state(known=first) is first, "nothing changed: nothing parsed"
        changes = [
            ("route", "replace", "10.244.7.0/24", "via", gateway, "dev", "eth0", "proto", proto),
            ("route", "add", "10.244.8.0/24", "nhid", "1347289089", "proto", proto),
            ("-6", "route", "del", "fd44::/64", "proto", proto),
            ("nexthop", "add", "id", "9", "via", gateway, "dev", "eth0"),  # anyone's id
        ]
        known = first
        for change in changes:
            ip(*change)
            again = kernel.read_state(known=known)
            assert again is not known, f"not seen: ip {' '.join(change)}"
            known = again
        ip("route", "add", "10.244.9.0/24", "nhid", "1347289089", "proto", proto)
        ip("route", "del", "10.244.9.0/24", "proto", proto)
        assert kernel.read_state(known=known) is known, "changed and changed back: as known"
        assert {str(d) for d in known.routes} == {"10.244.7.0/24", "10.244.8.0/24"}
        assert 9 in known.used_nexthop_ids
    finally:
        kernel.close()


def test_neighbour_and_fdb_entries_are_fingerprinted_without_their_timestamps(lab):
    """A neighbour or FDB entry reports how long ago it was used: the fingerprint must
    not change with the clock, and must change with the entry."""
    host = lab.host("host1")
    local = str(host.ipv4)

    def ip(*args: str) -> None:
        lab.run("host1", list(args), check=True)

    ip("ip", "link", "add", "vx", "type", "vxlan", "id", "1", "local", local, "dstport", "8472",
       "nolearning")  # fmt: skip
    ip("ip", "link", "set", "vx", "up")
    ip("ip", "neigh", "add", "10.244.9.0", "lladdr", "02:00:00:00:00:09", "dev", "vx",
       "nud", "permanent")  # fmt: skip
    ip("bridge", "fdb", "add", "02:00:00:00:00:09", "dev", "vx", "dst", "10.9.0.9", "self",
       "permanent")  # fmt: skip
    kernel = adapter_in(host.namespace)
    try:
        device = kernel.sock.links()
        vx = next(index for index, (name, _) in device.items() if name == "vx")
        known = kernel.read_state([vx])
        assert len(known.entries.neighbours) == 1 and len(known.entries.fdb) == 1
        time.sleep(1.2)  # the entries' "used" and "updated" ages move on
        assert kernel.read_state([vx], known) is known
        ip("bridge", "fdb", "replace", "02:00:00:00:00:09", "dev", "vx", "dst", "10.9.0.8",
           "self", "permanent")  # fmt: skip
        moved = kernel.read_state([vx], known)
        assert moved is not known
        assert {str(d) for d in moved.entries.fdb[(vx, "02:00:00:00:00:09")]} == {"10.9.0.8"}
        ip("ip", "neigh", "del", "10.244.9.0", "dev", "vx")
        assert not kernel.read_state([vx], moved).entries.neighbours
    finally:
        kernel.close()
