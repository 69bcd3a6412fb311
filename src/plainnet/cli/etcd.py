"""``plainnet etcd``: the network config in etcd (Flannel's format)."""

from __future__ import annotations

import asyncio

import click

from plainnet.cli.options import backend_options, chosen_backend, network_config, network_options
from plainnet.datastore.flannel_format import DEFAULT_PREFIX, render_config


@click.group()
def etcd() -> None:
    """The etcd datastore."""


@etcd.command()
@click.option("--etcd-endpoint", envvar="PLAINNET_ETCD_ENDPOINT", required=True, metavar="URL")
@click.option("--etcd-prefix", default=DEFAULT_PREFIX, show_default=True)
@network_options()
@backend_options
def init(
    etcd_endpoint: str,
    etcd_prefix: str,
    cluster_cidrs: tuple[str, ...],
    node_mask_ipv4: int,
    node_mask_ipv6: int,
    backend: str,
    vxlan_vni: int,
    vxlan_port: int,
) -> None:
    """Write the network config (<prefix>/config) that agents and flanneld read."""
    from plainnet.datastore.etcd import EtcdDatastore, parse_endpoint

    parse_endpoint(etcd_endpoint)  # a bad URL is one line, before anything else
    config = network_config(cluster_cidrs, node_mask_ipv4, node_mask_ipv6)
    chosen, options = chosen_backend(backend, vxlan_vni, vxlan_port)
    text = render_config(list(config.cluster_cidrs), config.node_prefixes, chosen.name, options)

    async def write() -> None:
        store = EtcdDatastore(etcd_endpoint, etcd_prefix)
        try:
            await store.put_network_config(text)
        finally:
            await store.close()

    asyncio.run(write())
    click.echo(f"{etcd_prefix}/config = {text}")
