"""``plainnet doctor --probe``: ICMP echo from this node to every peer, all in flight at
once on one raw socket — the peer node (underlay), the same with Don't Fragment at the
size pod packets reach the underlay (path MTU), the peer's VTEP address through the
overlay (the VXLAN UDP port), and the peer's pod gateway (the peer's side of the pod
network). IPv4 only. Replies are matched by identifier and sequence number; anything
else on the socket is ignored.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import time

from plainnet.doctor.checks import Probe

ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY = 8, 0
IP_MTU_DISCOVER, IP_PMTUDISC_PROBE = 10, 3
ATTEMPTS = 2
HEADERS = 28  # IPv4 + ICMP


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _echo(identifier: int, sequence: int, size: int) -> bytes:
    payload = bytes(max(0, size - HEADERS))
    header = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, identifier, sequence)
    checksum = _checksum(header + payload)
    return struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, checksum, identifier, sequence) + payload


def ping_all(probes: list[Probe], timeout: float = 1.0) -> dict[Probe, bool]:
    """Whether each probe was answered within ``timeout`` (``ATTEMPTS`` sends each)."""
    answered = dict.fromkeys(probes, False)
    if not probes:
        return answered
    identifier = os.getpid() & 0xFFFF
    plain = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    strict = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    strict.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_PROBE)
    by_sequence = dict(enumerate(probes, start=1))
    try:
        deadline = time.monotonic() + timeout
        for attempt in range(ATTEMPTS):
            for sequence, probe in by_sequence.items():
                if answered[probe]:
                    continue
                sock = strict if probe.dont_fragment else plain
                try:
                    sock.sendto(_echo(identifier, sequence, probe.size), (str(probe.address), 0))
                except OSError:
                    continue  # EMSGSIZE: this node's own link is smaller; unanswered
            last = attempt == ATTEMPTS - 1
            until = deadline if last else time.monotonic() + timeout / ATTEMPTS
            _collect((plain, strict), identifier, by_sequence, answered, until)
    finally:
        plain.close()
        strict.close()
    return answered


def _collect(
    sockets: tuple[socket.socket, ...],
    identifier: int,
    by_sequence: dict[int, Probe],
    answered: dict[Probe, bool],
    until: float,
) -> None:
    while not all(answered.values()):
        left = until - time.monotonic()
        if left <= 0:
            return
        ready, _, _ = select.select(sockets, [], [], left)
        for sock in ready:
            data = sock.recv(65535)
            header = (data[0] & 0x0F) * 4
            if len(data) < header + 8:
                continue
            kind, _, _, ident, sequence = struct.unpack_from("!BBHHH", data, header)
            probe = by_sequence.get(sequence)
            if (
                kind == ICMP_ECHO_REPLY
                and ident == identifier
                and probe is not None
                and data[12:16] == probe.address.packed
            ):
                answered[probe] = True
