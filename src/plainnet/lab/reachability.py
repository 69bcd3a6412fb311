"""All-pairs reachability between the hosts of a lab, measured with real ICMP echo."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from plainnet.ipam.types import IPAddress
from plainnet.lab.builder import Lab


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
