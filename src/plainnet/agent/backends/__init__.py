"""Routing backends: one folder each, behind one interface (:mod:`.base`).

- :mod:`.hostgw`: ``subnet via peer-address`` — one L2 segment, no device.
- :mod:`.vxlan`: an overlay device, routes through peer VTEPs, permanent neighbour and
  FDB entries; Flannel-compatible on the wire.
- :mod:`.auto`: host-gw to on-link peers, vxlan to the others (composed of the two).
- :mod:`.cloud`: no peer routes at all — the VPC's route table carries pod subnets
  (kept by ``plainnet cloud-routes``).

The table below is the only place that lists them. Modules are imported when a
backend is loaded, so importing this package costs nothing and a host-gw agent never
loads the VXLAN code (nor, through it, pyroute2).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING

from plainnet.errors import ConfigError

if TYPE_CHECKING:
    from plainnet.agent.backends.base import Backend

#: name -> (module, one-line description for --help and advise).
TABLE: dict[str, tuple[str, str]] = {
    "host-gw": ("hostgw", "plain routes via peer node addresses (one L2 segment)"),
    "vxlan": ("vxlan", "VXLAN overlay to every peer"),
    "auto": ("auto", "direct routes to on-link peers, VXLAN to the others"),
    "cloud": ("cloud", "no peer routes: the cloud VPC's route table carries pod subnets"),
}
BACKENDS = tuple(TABLE)


def load_backend(name: str, options: Mapping[str, object] | None = None) -> Backend:
    """The backend ``name`` with its settings; :class:`ConfigError` (one line) for an
    unknown name or a bad setting."""
    if name not in TABLE:
        raise ConfigError(
            f"backend {name!r} is not supported by this agent (supported: {', '.join(BACKENDS)})"
        )
    module = importlib.import_module(f"{__name__}.{TABLE[name][0]}")
    backend: Backend = module.from_options(dict(options or {}))
    return backend


def other_backends(active: Backend) -> list[Backend]:
    """Every other backend whose devices are not the active one's: their leftovers (from
    before a backend switch) are removed once routes have moved off them."""
    others = []
    for name in BACKENDS:
        backend = load_backend(name)
        if backend.name != active.name and not set(backend.device_names) & set(active.device_names):
            others.append(backend)
    return others


def all_device_names() -> frozenset[str]:
    """Names of every backend's devices: plainnet's own, never a network of the node."""
    return frozenset(n for name in BACKENDS for n in load_backend(name).device_names)
