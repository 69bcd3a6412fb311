"""Prometheus metrics and the agent's small HTTP endpoint: ``/metrics``, ``/healthz``
(liveness: the process works and keeps the kernel state) and ``/readyz`` (readiness:
the datastore is reachable, the node has its subnet, the last pass succeeded).

The endpoint is served on the agent's own asyncio loop from the first second — also
while the agent waits for its datastore (prometheus-client's threaded server would not
know whether the loop is alive; ``/healthz`` must). A restarted agent whose datastore
is down is alive, not ready: a liveness probe must not kill it again and again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class AgentMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.refused = Counter(
            "plainnet_peer_records_refused",
            "Peer records refused, by reason",
            ["reason"],
            registry=r,
        )
        self.peers = Gauge("plainnet_peers", "Peer records by state", ["state"], registry=r)
        self.routes = Gauge("plainnet_routes", "plainnet routes in the kernel", registry=r)
        self.route_changes = Counter(
            "plainnet_route_changes", "Route changes made", ["operation"], registry=r
        )
        self.entry_changes = Counter(
            "plainnet_link_entry_changes",
            "Permanent neighbour and FDB entries (vxlan, auto) set or deleted",
            ["kind", "operation"],
            registry=r,
        )
        self.reconciles = Counter(
            "plainnet_reconciles", "Reconcile passes, by trigger", ["trigger"], registry=r
        )
        self.reconcile_seconds = Histogram(
            "plainnet_reconcile_seconds",
            "Duration of one reconcile pass",
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.datastore_up = Gauge(
            "plainnet_datastore_up", "1 while the datastore watch runs", registry=r
        )
        self.datastore_errors = Counter(
            "plainnet_datastore_errors", "Datastore failures", registry=r
        )
        self.kernel_errors = Counter(
            "plainnet_kernel_errors", "Kernel requests refused", registry=r
        )
        self.lease_renewals = Counter(
            "plainnet_lease_renewals",
            "Renewals of this node's lease, by result (ok, failed)",
            ["result"],
            registry=r,
        )
        self.own_record_restores = Counter(
            "plainnet_own_record_restores",
            "Times this node's own record was found deleted or rewritten and put back",
            ["reason"],
            registry=r,
        )
        self.subnets_lost = Counter(
            "plainnet_subnets_lost",
            "Subnets this node held and found taken by another node after its lease expired",
            registry=r,
        )
        self.reconcile_loop_seconds = Histogram(
            "plainnet_reconcile_loop_seconds",
            "How long one pass held the event loop (kernel work runs on its own thread)",
            registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
        )
        self.loop_lag = Histogram(
            "plainnet_event_loop_lag_seconds",
            "How late the agent's event loop ran a timer: what blocking work cost events",
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


Check = Callable[[], tuple[bool, str]]


class Exposition(Protocol):
    """Anything with Prometheus text to serve (the agent's and cloud-routes' metrics)."""

    def render(self) -> bytes: ...


async def serve_http(
    host: str, port: int, metrics: Exposition, alive: Check, ready: Check
) -> asyncio.Server:
    """Serve GET /metrics, /healthz (``alive``) and /readyz (``ready``) on ``host:port``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request.decode("latin-1").split()
            path = parts[1] if len(parts) > 1 else "/"
            if path == "/metrics":
                status, body, kind = "200 OK", metrics.render(), CONTENT_TYPE_LATEST
            elif path in ("/healthz", "/readyz"):
                ok, reason = (alive if path == "/healthz" else ready)()
                status = "200 OK" if ok else "503 Service Unavailable"
                body, kind = (reason + "\n").encode(), "text/plain"
            else:
                status, body, kind = "404 Not Found", b"not found\n", "text/plain"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: "
                f"{len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)
