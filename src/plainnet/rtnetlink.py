"""The rtnetlink wire layouts plainnet packs by hand, defined once: the agent's bulk
path (:mod:`plainnet.agent.netlink`) and the CNI side's pod plumbing
(:mod:`plainnet.cni.pod_netlink`) both use them (and never import each other)."""

from __future__ import annotations

import struct

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
