"""``plainnet ipam``: look at how a cluster CIDR splits into node subnets."""

from __future__ import annotations

import click
from rich.table import Table

from plainnet.cli.options import network_config, network_options
from plainnet.cli.output import console
from plainnet.ipam.node_subnets import SubnetPool
from plainnet.ipam.pod_addresses import pod_capacity


@click.group()
def ipam() -> None:
    """Address planning."""


@ipam.command()
@network_options()
def plan(cluster_cidrs: tuple[str, ...], node_mask_ipv4: int, node_mask_ipv6: int) -> None:
    """How many nodes and pods per node a cluster CIDR holds."""
    config = network_config(cluster_cidrs, node_mask_ipv4, node_mask_ipv6)
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
