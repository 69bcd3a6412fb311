"""``plainnet etcd``: the network config in etcd (Flannel's format)."""

from __future__ import annotations

import asyncio

import click

from plainnet.cli.options import backend_options
from plainnet.config import load_backend_config, load_network_config
from plainnet.datastore.flannel_format import DEFAULT_PREFIX, render_config


@click.group()
def etcd() -> None:
    """The etcd datastore."""


@etcd.command()
@click.option("--etcd-endpoint", envvar="PLAINNET_ETCD_ENDPOINT", required=True, metavar="URL")
@click.option("--etcd-prefix", default=DEFAULT_PREFIX, show_default=True)
@click.option("--cluster-cidr", "cluster_cidrs", multiple=True, required=True)
@click.option("--node-mask-ipv4", type=int, default=24, show_default=True)
@click.option("--node-mask-ipv6", type=int, default=64, show_default=True)
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
    from plainnet.datastore.etcd import EtcdDatastore

    config = load_network_config(
        {
            "cluster_cidrs": list(cluster_cidrs),
            "node_mask_ipv4": node_mask_ipv4,
            "node_mask_ipv6": node_mask_ipv6,
        }
    )
    settings = load_backend_config({"name": backend, "vni": vxlan_vni, "port": vxlan_port})
    text = render_config(
        list(config.cluster_cidrs),
        config.node_prefixes,
        settings.name,
        vni=settings.vni,
        port=settings.port,
    )

    async def write() -> None:
        store = EtcdDatastore(etcd_endpoint, etcd_prefix)
        try:
            await store.put_network_config(text)
        finally:
            await store.close()

    asyncio.run(write())
    click.echo(f"{etcd_prefix}/config = {text}")
