"""The rtnetlink wire layouts plainnet packs by hand, defined once: the agent's bulk
path (:mod:`plainnet.agent.netlink`) and the CNI side's pod plumbing
(:mod:`plainnet.cni.pod_netlink`) both use them (and never import each other)."""

from __future__ import annotations

import struct
from collections.abc import Iterator

NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, sequence, port
RTMSG = struct.Struct("=BBBBBBBBI")
NHMSG = struct.Struct("=BBBBI")
IFADDRMSG = struct.Struct("=BBBBI")
IFINFOMSG = struct.Struct("=BxHiII")
NDMSG = struct.Struct("=BxxxiHBB")
RTATTR = struct.Struct("=HH")
U32 = struct.Struct("=I")
NLMSGERR = struct.Struct("=i")


def attr(kind: int, payload: bytes) -> bytes:
    """One attribute, padded to 4 bytes."""
    length = RTATTR.size + len(payload)
    return RTATTR.pack(length, kind) + payload + b"\0" * (-length % 4)


def iter_messages(data: bytes) -> Iterator[tuple[int, int, int, memoryview]]:
    """(type, flags, seq, body) of every netlink message in ``data``."""
    view = memoryview(data)
    offset = 0
    while offset + NLMSGHDR.size <= len(data):
        length, kind, flags, seq, _ = NLMSGHDR.unpack_from(data, offset)
        if length < NLMSGHDR.size:
            break
        yield kind, flags, seq, view[offset + NLMSGHDR.size : offset + length]
        offset += (length + 3) & ~3


def iter_attrs(body: memoryview | bytes, offset: int) -> Iterator[tuple[int, memoryview | bytes]]:
    """(type, payload) of every attribute of ``body`` from ``offset`` on."""
    while offset + RTATTR.size <= len(body):
        length, kind = RTATTR.unpack_from(body, offset)
        if length < RTATTR.size:
            break
        yield kind & 0x3FFF, body[offset + RTATTR.size : offset + length]
        offset += (length + 3) & ~3
