"""``plainnet ipam``: look at how a cluster CIDR splits into node subnets."""

from __future__ import annotations

import click
from rich.table import Table

from plainnet.cli.output import console
from plainnet.config import load_network_config
from plainnet.ipam.node_subnets import SubnetPool
from plainnet.ipam.pod_addresses import pod_capacity


@click.group()
def ipam() -> None:
    """Address planning."""


@ipam.command()
@click.option(
    "--cluster-cidr",
    "cluster_cidrs",
    multiple=True,
    required=True,
    help="Pod address space; give it twice (IPv4 and IPv6) for dual-stack.",
)
@click.option("--node-mask-ipv4", type=int, default=24, show_default=True)
@click.option("--node-mask-ipv6", type=int, default=64, show_default=True)
def plan(cluster_cidrs: tuple[str, ...], node_mask_ipv4: int, node_mask_ipv6: int) -> None:
    """How many nodes and pods per node a cluster CIDR holds."""
    config = load_network_config(
        {
            "cluster_cidrs": list(cluster_cidrs),
            "node_mask_ipv4": node_mask_ipv4,
            "node_mask_ipv6": node_mask_ipv6,
        }
    )
    table = Table(title="node subnets")
    for column in (
        "family",
        "cluster CIDR",
        "node mask",
        "nodes",
        "pods per node",
        "first node subnet",
        "last node subnet",
    ):
        table.add_column(
            column, justify="right" if column in ("nodes", "pods per node") else "left"
        )
    for cidr in config.cluster_cidrs:
        pool = SubnetPool(cidr, config.node_prefixes[cidr.version])
        first = pool.subnet_at(0)
        table.add_row(
            f"IPv{cidr.version}",
            str(cidr),
            f"/{pool.node_prefix}",
            f"{pool.size:,}",
            f"{pod_capacity(first):,}",
            str(first),
            str(pool.subnet_at(pool.size - 1)),
        )
    console.print(table)
