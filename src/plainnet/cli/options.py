"""Options and value handling shared by several ``plainnet`` commands."""

from __future__ import annotations

from pathlib import Path

import click

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
