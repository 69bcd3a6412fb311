"""``plainnet allocator``: the node subnet allocator controller."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import click

from plainnet.cli.options import kubeconfig_option, network_config, network_options


@click.command()
@kubeconfig_option
@network_options()
@click.option("--identity", help="Leader-election identity (default: hostname-pid).")
def allocator(
    kubeconfig: Path | None,
    cluster_cidrs: tuple[str, ...],
    node_mask_ipv4: int,
    node_mask_ipv6: int,
    identity: str | None,
) -> None:
    """Assign spec.podCIDR(s) to Nodes that have none, as kube-controller-manager
    --allocate-node-cidrs does; one leader among replicas."""
    from lightkube import AsyncClient

    from plainnet.allocator.controller import Allocator
    from plainnet.datastore.kubernetes import load_kube_config

    config = network_config(cluster_cidrs, node_mask_ipv4, node_mask_ipv6)
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    kube_config = load_kube_config(kubeconfig)

    async def main() -> None:
        client = AsyncClient(config=kube_config)
        try:
            await Allocator(
                client, list(config.cluster_cidrs), config.node_prefixes, identity
            ).run()
        finally:
            await client.close()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
