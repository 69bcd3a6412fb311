"""The in-lab half of bench/agent.py: runs inside a lab host (next to etcd and the agent).

usage: python bench/agent_probe.py ENDPOINT load COUNT [BACKEND]
       python bench/agent_probe.py ENDPOINT latency EVENTS FIRST_INDEX [BACKEND]

BACKEND: host-gw (default) or vxlan.
load: the network config (10.0.0.0/8 of /24s: up to 65,536 nodes) and COUNT leases from
the network's first subnet on, each with its own gateway in the on-link 172.16.0.0/12
(the worst case for a kernel: one gateway per route).
latency: delete the leases FIRST_INDEX.. (EVENTS of them) and wait for their routes to
go; then for each, put it again and wait for its route to appear (netlink notification
in this namespace); prints the delays from "etcd write returned" to "route present" as
JSON. Re-adding loaded peers keeps a full /8 measurable.
"""

from __future__ import annotations

import asyncio
import json
import select
import socket
import sys
import time
from ipaddress import ip_address, ip_network

import aetcd
import aetcd.transactions

from plainnet.agent import ROUTE_PROTOCOL
from plainnet.agent.netlink import (
    RTM_NEWROUTE,
    RouteSocket,
    iter_messages,
    parse_route,
    subscribe_events,
)
from plainnet.datastore.etcd import etcd_client

PREFIX = "/coreos.com/network"
CLUSTER = "10.0.0.0/8"
GATEWAYS = ip_address("172.16.4.0")  # the lab hosts themselves have the lowest addresses
CHUNK = 5000


def peer(index: int) -> tuple[str, str, str]:
    """(subnet key name, subnet, gateway) of peer ``index`` (from 0: a Flannel node never
    takes the first subnet, but a peer's record may hold it, and a full /8 needs it)."""
    network = ip_network(CLUSTER)
    subnet = ip_network((int(network.network_address) + (index << 8), 24))
    return f"{subnet.network_address}-24", str(subnet), str(GATEWAYS + index)


def lease(index: int, backend: str) -> tuple[bytes, bytes]:
    """A lease as plainnet writes it (a vxlan peer's VTEP MAC: derived from its address)."""
    name, _, gateway = peer(index)
    value = {"PublicIP": gateway, "BackendType": backend, "PlainnetNode": f"peer{index}"}
    return f"{PREFIX}/subnets/{name}".encode(), json.dumps(value).encode()


async def load(client: aetcd.Client, count: int, backend: str) -> None:
    config = {"Network": CLUSTER, "SubnetLen": 24, "Backend": {"Type": backend}}
    await client.put(f"{PREFIX}/config".encode(), json.dumps(config).encode())
    for start in range(0, count, CHUNK):
        puts = [
            aetcd.transactions.Put(*lease(i, backend))
            for i in range(start, min(start + CHUNK, count))
        ]
        succeeded, _ = await client.transaction(compare=[], success=puts, failure=[])
        assert succeeded


def wait_for_route(events: socket.socket, subnet: str, timeout: float = 5.0) -> float:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        ready, _, _ = select.select([events], [], [], max(0.0, deadline - time.perf_counter()))
        if not ready:
            break
        data = events.recv(1 << 20)
        now = time.perf_counter()
        for kind, _, _, body in iter_messages(data):
            if kind == RTM_NEWROUTE and (parsed := parse_route(body)):
                protocol, _, route = parsed
                if protocol == ROUTE_PROTOCOL and str(route.destination) == subnet:
                    return now
    raise SystemExit(f"route {subnet} did not appear within {timeout}s")


def routes_present(subnets: set[str]) -> set[str]:
    with RouteSocket() as kernel:
        return {str(r.destination) for r in kernel.routes(4, ROUTE_PROTOCOL)} & subnets


async def latency(client: aetcd.Client, events_count: int, first: int, backend: str) -> list[float]:
    indexes = range(first, first + events_count)
    deletes = [aetcd.transactions.Delete(lease(i, backend)[0]) for i in indexes]
    await client.transaction(compare=[], success=deletes, failure=[])
    subnets = {peer(i)[1] for i in indexes}
    deadline = time.perf_counter() + 60
    while routes_present(subnets):
        if time.perf_counter() > deadline:
            raise SystemExit("the deleted peers' routes did not go")
        time.sleep(0.05)
    delays = []
    for index in indexes:
        events = subscribe_events()
        events.setblocking(True)
        key, value = lease(index, backend)
        await client.put(key, value)
        written = time.perf_counter()
        delays.append(wait_for_route(events, peer(index)[1]) - written)
        events.close()
    return delays


async def main(endpoint: str, command: str, *args: str) -> None:
    client = etcd_client(endpoint, timeout=120)
    try:
        if command == "load":
            await load(client, int(args[0]), *args[1:2])
        elif command == "latency":
            print(json.dumps(await latency(client, int(args[0]), int(args[1]), *args[2:3])))
        else:
            raise SystemExit(f"unknown command {command}")
    finally:
        await client.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
