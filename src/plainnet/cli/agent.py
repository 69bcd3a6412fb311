"""``plainnet agent``: run the node agent; ``plainnet agent cleanup``: undo it."""

from __future__ import annotations

import socket
from ipaddress import ip_address
from pathlib import Path

import click

from plainnet.cli.options import (
    backend_options,
    cluster_cidr_option,
    kubeconfig_option,
    split_cidrs,
)
from plainnet.datastore.flannel_format import DEFAULT_PREFIX, DEFAULT_TTL_SECONDS
from plainnet.errors import PlainnetError


def _address(value: str) -> object:
    try:
        return ip_address(value)
    except ValueError:
        raise PlainnetError(f"--node-ip {value}: not an IP address") from None


def _listen(value: str) -> tuple[str, int]:
    if value == "off":
        return "", 0
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise PlainnetError(f"--metrics {value}: expected HOST:PORT or off")
    return host.strip("[]"), int(port)


@click.group(invoke_without_command=True)
@click.option(
    "--datastore",
    type=click.Choice(["etcd", "kubernetes"]),
    default="etcd",
    show_default=True,
    help="Where peer records live.",
)
@kubeconfig_option
@cluster_cidr_option()
@click.option(
    "--etcd-endpoint",
    envvar="PLAINNET_ETCD_ENDPOINT",
    metavar="URL",
    help="etcd v3 endpoint, e.g. http://10.0.0.5:2379.",
)
@click.option(
    "--etcd-prefix",
    default=DEFAULT_PREFIX,
    show_default=True,
    help="Key prefix (Flannel's default, so both can share one etcd).",
)
@click.option(
    "--lease-ttl",
    type=click.IntRange(5),
    default=DEFAULT_TTL_SECONDS,
    show_default=True,
    help="Seconds a node's subnet lease lives without renewal.",
)
@click.option("--node-name", default=socket.gethostname, show_default="hostname")
@click.option(
    "--node-ip",
    "node_ips",
    multiple=True,
    help="This node's address (IPv4 and/or IPv6); default: the addresses of the "
    "only interface that has any.",
)
@click.option(
    "--run-dir",
    type=click.Path(path_type=Path),
    default=Path("/run/plainnet"),
    show_default=True,
    help="Where subnet.json for the CNI plugin is written.",
)
@click.option(
    "--resync",
    type=click.FloatRange(0.5),
    default=60.0,
    show_default=True,
    help="Seconds between full resyncs with the kernel.",
)
@click.option(
    "--metrics",
    default="127.0.0.1:9158",
    show_default=True,
    help="HOST:PORT for /metrics and /healthz, or off.",
)
@click.option(
    "--cni/--no-cni",
    "cni_server",
    default=True,
    show_default=True,
    help="Answer the plainnet CNI plugin on this node (@plainnet-cni).",
)
@backend_options
@click.pass_context
def agent(
    ctx: click.Context,
    etcd_endpoint: str | None,
    etcd_prefix: str,
    lease_ttl: int,
    node_name: str,
    node_ips: tuple[str, ...],
    run_dir: Path,
    resync: float,
    metrics: str,
    cni_server: bool,
    datastore: str,
    kubeconfig: Path | None,
    cluster_cidrs: tuple[str, ...],
    backend: str,
    vxlan_vni: int,
    vxlan_port: int,
) -> None:
    """Run the node agent: claim this node's pod subnet, route every peer's.

    With the etcd datastore the backend comes from <prefix>/config (`plainnet etcd
    init`); with the Kubernetes datastore from --backend and --vxlan-*."""
    if ctx.invoked_subcommand is not None:
        return
    if datastore == "etcd" and not etcd_endpoint:
        raise PlainnetError(
            "no datastore: pass --etcd-endpoint URL (or set PLAINNET_ETCD_ENDPOINT)"
        )
    given = [
        f"--{name.replace('_', '-')}"
        for name in ("backend", "vxlan_vni", "vxlan_port")
        if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE
    ]
    if datastore == "etcd" and given:
        raise PlainnetError(
            f"{given[0]} is for the Kubernetes datastore; with etcd every node reads the "
            f"backend from <prefix>/config: set it with `plainnet etcd init --backend ...`"
        )
    from plainnet.agent.agent import AgentSettings, run_agent

    host, port = _listen(metrics)
    settings = AgentSettings(
        node_name=node_name,
        node_addresses=tuple(_address(a) for a in node_ips),  # type: ignore[misc]
        run_dir=run_dir,
        resync_seconds=resync,
        renew_seconds=max(lease_ttl / 3, 1),
        metrics_host=host,
        metrics_port=port,
        cni_server=cni_server,
    )
    if datastore == "kubernetes":
        from plainnet.config import load_backend_config, load_network_config
        from plainnet.datastore.kubernetes import KubernetesDatastore

        if not cluster_cidrs:
            raise PlainnetError(
                "the Kubernetes datastore needs --cluster-cidr (the range node podCIDRs come from)"
            )
        config = load_network_config({"cluster_cidrs": split_cidrs(cluster_cidrs)})
        chosen = load_backend_config({"name": backend, "vni": vxlan_vni, "port": vxlan_port})
        store: object = KubernetesDatastore(
            node_name,
            list(config.cluster_cidrs),
            backend=chosen.name,
            kubeconfig=kubeconfig,
            vni=chosen.vni,
            port=chosen.port,
        )
    else:
        from plainnet.datastore.etcd import EtcdDatastore

        store = EtcdDatastore(etcd_endpoint, etcd_prefix, ttl_seconds=lease_ttl)
    run_agent(settings, store)  # type: ignore[arg-type]


@agent.command()
@click.option(
    "--run-dir", type=click.Path(path_type=Path), default=Path("/run/plainnet"), show_default=True
)
def cleanup(run_dir: Path) -> None:
    """Remove every route and nexthop plainnet created on this node, its VXLAN device
    and its state file. Routes of other software are never touched."""
    from plainnet.agent import ROUTE_PROTOCOL
    from plainnet.agent.backends.vxlan import DEVICE_NAME
    from plainnet.agent.kernel import KernelRoutes
    from plainnet.agent.node_state import FILE_NAME
    from plainnet.agent.vxlan_device import remove_device

    kernel = KernelRoutes(ROUTE_PROTOCOL)
    try:
        routes, nexthops = kernel.remove_all()
    finally:
        kernel.close()
    device = remove_device(DEVICE_NAME)
    (run_dir / FILE_NAME).unlink(missing_ok=True)
    click.echo(
        f"removed {routes} routes and {nexthops} nexthops (protocol {ROUTE_PROTOCOL})"
        + (f" and the VXLAN device {DEVICE_NAME}" if device else "")
    )
