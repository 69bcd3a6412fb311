"""``plainnet cloud-routes``: the VPC route controller (one active replica per cluster)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import click

from plainnet.cli.options import (
    cluster_cidr_option,
    kubeconfig_option,
    listen_address,
    network_config,
)
from plainnet.errors import PlainnetError

_VPC_ID = re.compile(r"vpc-[0-9a-f]{8,17}")
_CLUSTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,126}")


@click.command(name="cloud-routes")
@kubeconfig_option
@cluster_cidr_option(required=True)
@click.option("--cloud", type=click.Choice(["aws"]), default="aws", show_default=True)
@click.option("--vpc-id", required=True, help="The VPC whose route tables carry pod subnets.")
@click.option(
    "--cluster-name",
    required=True,
    help="Route tables tagged kubernetes.io/cluster/<name> are this cluster's.",
)
@click.option("--region", envvar="AWS_REGION", help="Default: the SDK's (AWS_REGION, config).")
@click.option("--endpoint-url", help="EC2 endpoint override (a test server).")
@click.option(
    "--target",
    type=click.Choice(["instance", "network-interface"]),
    default="instance",
    show_default=True,
    help="Route to the node's instance, or to its primary network interface.",
)
@click.option(
    "--route-limit",
    type=click.IntRange(1),
    default=50,
    show_default=True,
    help="Routes a table holds (AWS's default quota is 50).",
)
@click.option(
    "--period",
    type=click.FloatRange(1),
    default=30.0,
    show_default=True,
    help="Seconds between full passes (what brings back a route deleted by hand).",
)
@click.option("--identity", help="Leader-election identity (default: hostname-pid).")
@click.option("--metrics", default="0.0.0.0:9159", show_default=True, help="HOST:PORT or off.")
def cloud_routes(
    kubeconfig: Path | None,
    cluster_cidrs: tuple[str, ...],
    cloud: str,
    vpc_id: str,
    cluster_name: str,
    region: str | None,
    endpoint_url: str | None,
    target: str,
    route_limit: int,
    period: float,
    identity: str | None,
    metrics: str,
) -> None:
    """Keep the VPC's route tables equal to "one route per node pod subnet -> that
    node's instance"; set each Node's NetworkUnavailable condition; report what cannot
    be served as Events. Nodes then run `plainnet agent --backend cloud`."""
    if not _VPC_ID.fullmatch(vpc_id):
        raise PlainnetError(f"--vpc-id {vpc_id!r}: expected vpc-<hex>")
    if not _CLUSTER_NAME.fullmatch(cluster_name):
        raise PlainnetError(f"--cluster-name {cluster_name!r}: letters, digits, '_', '.', '-'")
    listen = listen_address(metrics)
    config = network_config(cluster_cidrs)

    from lightkube import AsyncClient

    from plainnet.agent.metrics import serve_http
    from plainnet.agent.reactor import run_until_signalled
    from plainnet.cloud.aws import AwsRoutes
    from plainnet.cloud.controller import CloudRoutes, CloudRoutesMetrics
    from plainnet.datastore.kubernetes import load_kube_config

    logging.getLogger("httpx2").setLevel(logging.WARNING)
    logging.getLogger("botocore").setLevel(logging.WARNING)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    kube_config = load_kube_config(kubeconfig)
    counters = CloudRoutesMetrics()
    provider = AwsRoutes(
        vpc_id,
        cluster_name,
        region=region,
        endpoint_url=endpoint_url,
        target=target,  # type: ignore[arg-type]
        on_call=counters.on_call,
    )

    async def main(stop) -> None:  # type: ignore[no-untyped-def]
        import asyncio

        client = AsyncClient(config=kube_config)
        controller = CloudRoutes(
            client,
            provider,
            list(config.cluster_cidrs),
            route_limit=route_limit,
            period=period,
            identity=identity,
            metrics=counters,
            target=target,  # type: ignore[arg-type]
        )
        http = None
        if listen[1]:
            http = await serve_http(
                listen[0], listen[1], counters, controller.alive, controller.ready
            )
        running = asyncio.create_task(controller.run())
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait([running, stopping], return_when=asyncio.FIRST_COMPLETED)
            if running.done():
                running.result()  # a bug: say so
        finally:
            running.cancel()
            stopping.cancel()
            if http is not None:
                http.close()
            await client.close()

    run_until_signalled(main)
