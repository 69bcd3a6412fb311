"""The pod's plumbing in a few packed rtnetlink requests: the veth pair, its node side on
the bridge, the pod side's addresses and default routes.

Why not pyroute2 here (it does everything else of the CNI side): a burst of 50
concurrent ADDs runs in one interpreter, and pyroute2 spent ~5 ms of interpreter time
per pod encoding, decoding and scheduling its own asyncio loop per socket — the
burst's bottleneck (``docs/benchmarks.md``, issue 12). An ADD needs eleven fixed
requests; each is packed with :mod:`struct` and acknowledged, and a refusal raises
:class:`PodNetlinkError` naming the step and the kernel's errno.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Sequence
from ipaddress import IPv4Interface, IPv6Interface

from plainnet.ipam.types import IPAddress
from plainnet.namespaces import thread_in_namespace
from plainnet.rtnetlink import (
    IFADDRMSG,
    IFINFOMSG,
    NLMSGERR,
    NLMSGHDR,
    RTMSG,
    U32,
    attr,
    iter_attrs,
    iter_messages,
)

Interface = IPv4Interface | IPv6Interface


_REQUEST, _ACK, _EXCL, _CREATE, _REPLACE = 0x1, 0x4, 0x200, 0x400, 0x100
_ERROR, _NEWLINK, _DELLINK, _GETLINK, _SETLINK = 2, 16, 17, 18, 19
_NEWADDR, _NEWROUTE = 20, 24
_IFLA_ADDRESS, _IFLA_IFNAME, _IFLA_MTU, _IFLA_MASTER, _IFLA_PROTINFO = 1, 3, 4, 10, 12
_IFLA_LINKINFO, _IFLA_IFALIAS, _IFLA_NET_NS_FD = 18, 20, 28
_INFO_KIND, _INFO_DATA, _VETH_PEER, _BRPORT_MODE = 1, 2, 1, 4
_IFA_ADDRESS, _IFA_LOCAL, _IFA_FLAGS, _IFA_F_NODAD = 1, 2, 8, 0x02
_RTA_GATEWAY, _RTA_OIF = 5, 4
_NESTED, _IFF_UP, _AF_BRIDGE = 0x8000, 0x1, 7
_MAIN_TABLE, _PROTO_BOOT, _UNICAST = 254, 3, 1
#: ``lo`` is interface 1 in every network namespace.
LOOPBACK_INDEX = 1


class PodNetlinkError(OSError):
    """The kernel refused one step of a pod's plumbing."""

    def __init__(self, code: int, step: str) -> None:
        super().__init__(code, f"{step}: {os.strerror(code)}")


def _name(text: str) -> bytes:
    return text.encode() + b"\0"


def _link(index: int = 0, up: bool = False, family: int = socket.AF_UNSPEC) -> bytes:
    return IFINFOMSG.pack(family, 0, index, _IFF_UP if up else 0, _IFF_UP if up else 0)


class _Rtnl:
    """One NETLINK_ROUTE socket of the namespace it was made in."""

    def __init__(self) -> None:
        self.sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE
        )
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def call(self, kind: int, flags: int, body: bytes, step: str) -> bytes:
        """Send one request; the answer's body (an RTM_NEWLINK for a get), or b"" for
        an acknowledgement."""
        self.seq += 1
        size = NLMSGHDR.size + len(body)
        self.sock.send(NLMSGHDR.pack(size, kind, flags | _REQUEST | _ACK, self.seq, 0) + body)
        answer: memoryview | bytes = b""
        while True:
            for got, _, seq, message in iter_messages(self.sock.recv(65536)):
                if seq != self.seq:
                    continue
                if got == _ERROR:
                    code = -NLMSGERR.unpack_from(message)[0]
                    if code:
                        raise PodNetlinkError(code, step)
                    return bytes(answer)
                answer = message


def _get_link(rtnl: _Rtnl, ifname: str) -> tuple[int, str]:
    """(ifindex, MAC) of interface ``ifname``."""
    body = rtnl.call(_GETLINK, 0, _link() + attr(_IFLA_IFNAME, _name(ifname)), f"find {ifname}")
    index = IFINFOMSG.unpack_from(body)[2]
    mac = next((bytes(v) for k, v in iter_attrs(body, IFINFOMSG.size) if k == _IFLA_ADDRESS), b"")
    return index, mac.hex(":")


def plumb_pod(
    netns_path: str,
    ifname: str,
    host_name: str,
    bridge_index: int,
    addresses: Sequence[Interface],
    gateways: Sequence[IPAddress],
    mtu: int,
    hairpin: bool,
    alias: str,
) -> tuple[str, str]:
    """Create (or, after a retried ADD, make again) the veth pair: the node side on the
    bridge, up, with ``alias``; the pod side ``ifname`` in the pod's namespace with its
    addresses and default routes. Returns the (node side, pod side) MACs."""
    host = _Rtnl()
    try:
        netns_fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            peer = _link() + attr(_IFLA_IFNAME, _name(ifname)) + attr(_IFLA_MTU, U32.pack(mtu))
            peer += attr(_IFLA_NET_NS_FD, U32.pack(netns_fd))
            info = attr(_INFO_KIND, b"veth") + attr(_INFO_DATA | _NESTED, attr(_VETH_PEER, peer))
            veth = _link() + attr(_IFLA_IFNAME, _name(host_name)) + attr(_IFLA_MTU, U32.pack(mtu))
            veth += attr(_IFLA_LINKINFO | _NESTED, info)
            try:
                host.call(_NEWLINK, _CREATE | _EXCL, veth, f"create veth {host_name}")
            except PodNetlinkError as exc:
                if exc.errno != errno.EEXIST:
                    raise
                delete = _link() + attr(_IFLA_IFNAME, _name(host_name))
                host.call(_DELLINK, 0, delete, f"delete half-made {host_name}")
                host.call(_NEWLINK, _CREATE | _EXCL, veth, f"create veth {host_name}")
        finally:
            os.close(netns_fd)
        index, host_mac = _get_link(host, host_name)
        attach = _link(index, up=True) + attr(_IFLA_MASTER, U32.pack(bridge_index))
        attach += attr(_IFLA_IFALIAS, _name(alias))
        host.call(_NEWLINK, 0, attach, f"attach {host_name} to the bridge")
        if hairpin:
            mode = attr(_IFLA_PROTINFO | _NESTED, attr(_BRPORT_MODE, b"\1"))
            host.call(_SETLINK, 0, _link(index, family=_AF_BRIDGE) + mode, f"hairpin {host_name}")
    finally:
        host.close()
    with thread_in_namespace(netns_path):
        pod = _Rtnl()  # a socket keeps the namespace it was made in
    try:
        pod_index, pod_mac = _get_link(pod, ifname)
        for address in addresses:
            family = socket.AF_INET if address.version == 4 else socket.AF_INET6
            raw = address.ip.packed
            body = IFADDRMSG.pack(family, address.network.prefixlen, _IFA_F_NODAD, 0, pod_index)
            body += attr(_IFA_LOCAL, raw) + attr(_IFA_ADDRESS, raw)
            body += attr(_IFA_FLAGS, U32.pack(_IFA_F_NODAD))
            pod.call(_NEWADDR, _CREATE | _REPLACE, body, f"address {address} on {ifname}")
        pod.call(_NEWLINK, 0, _link(pod_index, up=True), f"set {ifname} up")
        pod.call(_NEWLINK, 0, _link(LOOPBACK_INDEX, up=True), "set lo up")
        for gateway in gateways:
            family = socket.AF_INET if gateway.version == 4 else socket.AF_INET6
            route = RTMSG.pack(family, 0, 0, 0, _MAIN_TABLE, _PROTO_BOOT, 0, _UNICAST, 0)
            route += attr(_RTA_GATEWAY, gateway.packed) + attr(_RTA_OIF, U32.pack(pod_index))
            pod.call(_NEWROUTE, _CREATE | _REPLACE, route, f"default route via {gateway}")
    finally:
        pod.close()
    return host_mac, pod_mac
