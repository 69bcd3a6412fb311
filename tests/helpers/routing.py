"""Routing contexts for the pure tests: a backend, this node's networks, its links."""

from __future__ import annotations

from plainnet.agent.backends import load_backend
from plainnet.agent.backends.base import RoutingContext
from plainnet.agent.backends.vxlan import VxlanLinks
from plainnet.agent.kernel_model import DesiredRoute


def context(backend: str, local, ifindex: int = 7, underlay: int = 4, **options) -> RoutingContext:
    """``backend`` over ``local``; an overlay's device is ``ifindex`` on ``underlay``."""
    chosen = load_backend(backend, options)
    links = VxlanLinks(ifindex, underlay, "0e:70:0a:fa:01:02") if chosen.device_names else None
    return RoutingContext(chosen, tuple(local), links)


def desired_routes(peers, ctx: RoutingContext) -> dict:
    routes: dict = {}
    for peer in peers:
        routes.update(ctx.backend.peer_state(peer, ctx.local, ctx.links).routes)
    return routes


def is_overlay(route: DesiredRoute, ctx: RoutingContext) -> bool:
    return ctx.links is not None and route.ifindex == ctx.links.ifindex
