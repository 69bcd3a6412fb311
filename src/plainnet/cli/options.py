"""Options and value handling shared by several ``plainnet`` commands, defined once so
every command accepts the same spellings (``--cluster-cidr a,b`` and ``--cluster-cidr
a --cluster-cidr b`` alike) and refuses bad values with the same line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from plainnet.agent.backends import BACKENDS, TABLE
from plainnet.errors import PlainnetError

if TYPE_CHECKING:
    from plainnet.agent.backends.base import Backend
    from plainnet.config import NetworkConfig

F = TypeVar("F", bound=Callable[..., Any])

kubeconfig_option = click.option(
    "--kubeconfig",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Kubernetes credentials (default: in-cluster / $KUBECONFIG).",
)


#: Where the agent keeps its node state (subnet.json, the IPAM store): its default is
#: every command's that reads or removes that state.
DEFAULT_RUN_DIR = Path("/run/plainnet")


#: The agent's --metrics (/metrics, /healthz, /readyz); doctor asks there by default.
DEFAULT_METRICS = "127.0.0.1:9158"
#: Where container runtimes read CNI configs.
DEFAULT_CNI_CONF_DIR = Path("/etc/cni/net.d")


def run_dir_option(help: str | None = None) -> Callable[[F], F]:
    return click.option(
        "--run-dir",
        type=click.Path(path_type=Path),
        default=DEFAULT_RUN_DIR,
        show_default=True,
        help=help,
    )


def cluster_cidr_option(required: bool = False) -> Callable[[F], F]:
    return click.option(
        "--cluster-cidr",
        "cluster_cidrs",
        multiple=True,
        required=required,
        help="Pod address space: once per family, or comma-separated (IPv4 first).",
    )


def network_options(required: bool = True) -> Callable[[F], F]:
    """--cluster-cidr, --node-mask-ipv4, --node-mask-ipv6; read them with
    :func:`network_config`."""

    def decorate(function: F) -> F:
        function = click.option(
            "--node-mask-ipv6",
            type=int,
            default=64,
            show_default=True,
            help="Prefix length of each node's IPv6 pod subnet.",
        )(function)
        function = click.option(
            "--node-mask-ipv4",
            type=int,
            default=24,
            show_default=True,
            help="Prefix length of each node's IPv4 pod subnet.",
        )(function)
        return cluster_cidr_option(required)(function)

    return decorate


def split_cidrs(values: tuple[str, ...]) -> list[str]:
    """``--cluster-cidr a --cluster-cidr b`` and ``--cluster-cidr a,b`` alike (a ConfigMap
    value passed through an environment variable is one comma-separated string)."""
    return [c.strip() for value in values for c in value.split(",") if c.strip()]


def network_config(
    cluster_cidrs: tuple[str, ...], node_mask_ipv4: int = 24, node_mask_ipv6: int = 64
) -> NetworkConfig:
    """The validated network of :func:`network_options`; one line for a bad value."""
    from plainnet.config import load_network_config

    return load_network_config(
        {
            "cluster_cidrs": split_cidrs(cluster_cidrs),
            "node_mask_ipv4": node_mask_ipv4,
            "node_mask_ipv6": node_mask_ipv6,
        }
    )


backend_option = click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default="host-gw",
    show_default=True,
    help="; ".join(f"{name}: {summary}" for name, (_, summary) in TABLE.items()) + ".",
)


def backend_options(function: F) -> F:
    """--backend, --vxlan-vni, --vxlan-port; read them with :func:`chosen_backend`."""
    from plainnet.agent.backends.vxlan import DEFAULT_PORT, DEFAULT_VNI

    function = click.option(
        "--vxlan-port",
        type=int,
        default=DEFAULT_PORT,
        show_default=True,
        help="VXLAN UDP port (vxlan, auto).",
    )(function)
    function = click.option(
        "--vxlan-vni",
        type=int,
        default=DEFAULT_VNI,
        show_default=True,
        help="VXLAN network identifier (vxlan, auto).",
    )(function)
    return backend_option(function)


def chosen_backend(backend: str, vxlan_vni: int, vxlan_port: int) -> tuple[Backend, dict]:
    """The backend :func:`backend_options` chose and the settings it takes, validated
    by the backend itself (one line for a bad value)."""
    from plainnet.agent.backends import load_backend

    options = {"vni": vxlan_vni, "port": vxlan_port} if backend in ("vxlan", "auto") else {}
    return load_backend(backend, options), options


def listen_address(value: str, option: str = "--metrics") -> tuple[str, int]:
    """HOST:PORT (or ``off``: port 0) of an HTTP endpoint; one line for a bad value."""
    if value == "off":
        return "", 0
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise PlainnetError(f"{option} {value}: expected HOST:PORT or off")
    return host.strip("[]"), int(port)
