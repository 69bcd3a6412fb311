"""Which new connections get through: every pod to every other pod, on each port and
protocol, all probed at once (a denied probe costs its wait once, not once each).

- TCP: a non-blocking connect from the source pod; allowed when it completes within
  the wait (a listener on every probed port answers every allowed SYN).
- UDP: a datagram with a unique payload; allowed when the destination's listener got
  it from the source pod's own address.

Listeners are bound to each pod's address, so a probe never reaches anything but the
pod it names. Used by the network-policy tests and ``plainnet lab check``.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass

from plainnet.ipam.types import IPAddress
from plainnet.lab import netns


@dataclass(frozen=True)
class Endpoint:
    """A pod as probed: its name, namespace (the network one) and address."""

    name: str
    namespace: str
    address: IPAddress


Probe = tuple[str, str, str, int]  # source name, destination name, protocol, port


def _family(address: IPAddress) -> int:
    return socket.AF_INET if address.version == 4 else socket.AF_INET6


def probe_matrix(
    pods: list[Endpoint],
    ports: Iterable[int] = (80, 81),
    protocols: Iterable[str] = ("TCP", "UDP"),
    wait: float = 0.6,
) -> dict[Probe, bool]:
    """(source, destination, protocol, port) -> got through, for every ordered pair of
    pods of one address family."""
    ports, protocols = list(ports), list(protocols)
    opened: list[socket.socket] = []
    try:
        tcp_listeners: dict[socket.socket, str] = {}
        udp_listeners: dict[tuple[str, int], socket.socket] = {}
        for pod in pods:
            for port in ports:
                if "TCP" in protocols:
                    listener = netns.socket_in(pod.namespace, _family(pod.address))
                    opened.append(listener)
                    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    listener.bind((str(pod.address), port))
                    listener.listen(512)
                    listener.setblocking(False)
                    tcp_listeners[listener] = pod.name
                if "UDP" in protocols:
                    receiver = netns.socket_in(
                        pod.namespace, _family(pod.address), socket.SOCK_DGRAM
                    )
                    opened.append(receiver)
                    receiver.bind((str(pod.address), port))
                    receiver.setblocking(False)
                    udp_listeners[(pod.name, port)] = receiver
        pending: dict[socket.socket, Probe] = {}
        sent: dict[bytes, Probe] = {}
        for source in pods:
            for target in pods:
                if source is target or source.address.version != target.address.version:
                    continue
                for port in ports:
                    if "TCP" in protocols:
                        client = netns.socket_in(source.namespace, _family(source.address))
                        opened.append(client)
                        client.setblocking(False)
                        client.connect_ex((str(target.address), port))
                        pending[client] = (source.name, target.name, "TCP", port)
                    if "UDP" in protocols:
                        sender = netns.socket_in(
                            source.namespace, _family(source.address), socket.SOCK_DGRAM
                        )
                        opened.append(sender)
                        token = os.urandom(8)
                        sent[token] = (source.name, target.name, "UDP", port)
                        sender.sendto(token, (str(target.address), port))
        result: dict[Probe, bool] = dict.fromkeys([*pending.values(), *sent.values()], False)
        addresses = {p.name: p.address for p in pods}
        deadline = time.monotonic() + wait
        waiting = dict(pending)
        while time.monotonic() < deadline:
            remaining = max(0.0, deadline - time.monotonic())
            readable = [*tcp_listeners, *udp_listeners.values()]
            ready_r, ready_w, _ = select.select(readable, list(waiting), [], min(remaining, 0.05))
            for sock in ready_w:
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    result[waiting[sock]] = True
                del waiting[sock]
            for sock in ready_r:
                if sock in tcp_listeners:
                    with contextlib.suppress(BlockingIOError):
                        accepted, _ = sock.accept()
                        accepted.close()
                    continue
                with contextlib.suppress(BlockingIOError):
                    while True:
                        token, (origin, _port, *_) = sock.recvfrom(64)
                        probe = sent.get(token)
                        if probe and str(addresses[probe[0]]) == origin:
                            result[probe] = True
        return result
    finally:
        for sock in opened:
            sock.close()


def format_matrix(pods: list[str], expected: dict[Probe, bool], observed: dict[Probe, bool]) -> str:
    """One table per (protocol, port): rows sources, columns destinations; ``.``
    allowed, ``X`` denied, upper-case ``!`` where observed differs from expected."""
    lines = []
    for protocol, port in sorted({(p[2], p[3]) for p in expected}):
        lines.append(f"{protocol}/{port}  expected | observed")
        lines.append("      " + " ".join(f"{d[:5]:>5}" for d in pods))
        for source in pods:
            cells = []
            for target in pods:
                key = (source, target, protocol, port)
                if key not in expected:
                    cells.append(f"{'-':>5}")
                    continue
                want, got = expected[key], observed.get(key)
                mark = ("." if want else "X") + ("." if got else "X")
                cells.append(f"{mark if want == got else mark + '!':>5}")
            lines.append(f"{source[:5]:>5} " + " ".join(cells))
    return "\n".join(lines)
