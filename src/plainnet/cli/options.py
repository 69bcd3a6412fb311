"""Options and value handling shared by several ``plainnet`` commands."""

from __future__ import annotations

from pathlib import Path

import click

from plainnet.backend_names import BACKENDS

kubeconfig_option = click.option(
    "--kubeconfig",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Kubernetes credentials (default: in-cluster / $KUBECONFIG).",
)


def cluster_cidr_option(required: bool = False):  # type: ignore[no-untyped-def]
    return click.option(
        "--cluster-cidr",
        "cluster_cidrs",
        multiple=True,
        required=required,
        help="Pod address space: once per family, or comma-separated (IPv4 first).",
    )


def split_cidrs(values: tuple[str, ...]) -> list[str]:
    """``--cluster-cidr a --cluster-cidr b`` and ``--cluster-cidr a,b`` alike (a ConfigMap
    value passed through an environment variable is one comma-separated string)."""
    return [c.strip() for value in values for c in value.split(",") if c.strip()]


backend_option = click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default="host-gw",
    show_default=True,
    help="host-gw: plain routes (one L2 segment); vxlan: overlay to every peer; "
    "auto: direct routes to on-link peers, VXLAN to the others.",
)


def backend_options(function):  # type: ignore[no-untyped-def]
    """--backend, --vxlan-vni, --vxlan-port (validated by BackendConfig)."""
    from plainnet.backend_names import DEFAULT_VNI, DEFAULT_VXLAN_PORT

    function = click.option(
        "--vxlan-port",
        type=int,
        default=DEFAULT_VXLAN_PORT,
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
