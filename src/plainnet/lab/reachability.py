"""All-pairs reachability in a lab, measured with real packets: between hosts (ICMP echo)
and between pods (ICMP echo and TCP, checking the source address is preserved)."""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from ipaddress import ip_address

from plainnet.ipam.types import IPAddress
from plainnet.lab import netns
from plainnet.lab.builder import Lab
from plainnet.lab.cluster import Pod


@dataclass(frozen=True)
class Probe:
    source: str
    target: str
    address: IPAddress
    reached: bool


def probe_all_pairs(
    lab: Lab,
    hosts: list[str] | None = None,
    *,
    roles: tuple[str, ...] = ("host",),
    count: int = 1,
    wait: float = 1,
) -> list[Probe]:
    """Ping every address of every other host from every host (of the given roles)."""
    chosen = [h for h in lab.plan.hosts if h.role in roles and (hosts is None or h.name in hosts)]
    pairs = [
        (source.name, target.name, address)
        for source in chosen
        for target in chosen
        if source is not target
        for address in target.addresses()
    ]

    def probe(pair: tuple[str, str, IPAddress]) -> Probe:
        source, target, address = pair
        return Probe(source, target, address, lab.ping(source, address, count=count, wait=wait))

    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(probe, pairs))


@dataclass(frozen=True)
class PodProbe:
    source: str
    target: str
    address: IPAddress
    icmp: bool
    tcp: bool
    #: The source address the target saw on the TCP connection (no NAT: the pod's own).
    seen_from: str | None

    @property
    def ok(self) -> bool:
        return self.icmp and self.tcp


TCP_PORT = 7777


def probe_pods(pods: list[Pod], *, wait: float = 1.0) -> list[PodProbe]:
    """Every pod against every other pod, every address family: an ICMP echo (``ping``
    inside the source pod) and a TCP connection whose arrival is checked at the target,
    including the source address and port it arrives from."""
    pairs = [(s, t, a) for s in pods for t in pods if s is not t for a in t.addresses]
    listeners: dict[tuple[str, int], socket.socket] = {}
    try:
        for pod in pods:
            for address in pod.addresses:
                family = socket.AF_INET if address.version == 4 else socket.AF_INET6
                listener = netns.socket_in(pod.namespace, family)
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listener.bind((str(address), TCP_PORT))
                listener.listen(len(pairs) + 8)
                listener.setblocking(False)
                listeners[(pod.namespace, address.version)] = listener

        def icmp(pair: tuple[Pod, Pod, IPAddress]) -> bool:
            return netns.ping(pair[0].namespace, pair[2], wait=wait)

        def connect(pair: tuple[Pod, Pod, IPAddress]) -> tuple[str, int] | None:
            source, _, address = pair
            family = socket.AF_INET if address.version == 4 else socket.AF_INET6
            client = netns.socket_in(source.namespace, family)
            client.settimeout(wait)
            try:
                client.connect((str(address), TCP_PORT))
                local = client.getsockname()
                client.close()
                return str(ip_address(local[0])), local[1]
            except OSError:
                client.close()
                return None

        with ThreadPoolExecutor(max_workers=16) as pool:
            pinged = list(pool.map(icmp, pairs))
            connected = list(pool.map(connect, pairs))
        arrived: dict[tuple[str, int], set[tuple[str, int]]] = {}
        for key, listener in listeners.items():
            peers = arrived.setdefault(key, set())
            while True:
                try:
                    connection, peer = listener.accept()
                except BlockingIOError:
                    break
                peers.add((str(ip_address(peer[0])), peer[1]))
                connection.close()
    finally:
        for listener in listeners.values():
            listener.close()
    probes = []
    for (source, target, address), icmp_ok, client in zip(pairs, pinged, connected, strict=True):
        seen = arrived.get((target.namespace, address.version), set())
        tcp_ok = client is not None and client in seen
        probes.append(
            PodProbe(
                source.name,
                target.name,
                address,
                icmp_ok,
                tcp_ok,
                client[0] if tcp_ok and client else None,
            )
        )
    return probes
