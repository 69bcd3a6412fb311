"""``plainnet agent``: run the node agent; ``plainnet agent cleanup``: undo it.

This is the composition root of a node: it builds the datastore, the kernel adapter,
the metrics endpoint and the CNI server, and starts the agent and the CNI server side
by side — neither imports the other; the node's facts go from one to the other through
a :class:`~plainnet.node_state.NodeStatePublisher`.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
from ipaddress import ip_address
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import click

from plainnet.cli.options import (
    DEFAULT_METRICS,
    backend_options,
    chosen_backend,
    cluster_cidr_option,
    kubeconfig_option,
    listen_address,
    network_config,
    run_dir_option,
)
from plainnet.datastore.flannel_format import DEFAULT_PREFIX, DEFAULT_TTL_SECONDS
from plainnet.errors import PlainnetError

if TYPE_CHECKING:
    from plainnet.agent.startup import AgentSettings
    from plainnet.datastore.records import Datastore


def _address(value: str) -> object:
    try:
        return ip_address(value)
    except ValueError:
        raise PlainnetError(f"--node-ip {value}: not an IP address") from None


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
@run_dir_option("Where subnet.json for the CNI plugin is written.")
@click.option(
    "--resync",
    type=click.FloatRange(0.5),
    default=60.0,
    show_default=True,
    help="Seconds between full resyncs with the kernel.",
)
@click.option(
    "--metrics",
    default=DEFAULT_METRICS,
    show_default=True,
    help="HOST:PORT for /metrics, /healthz (liveness) and /readyz (readiness), or off.",
)
@click.option(
    "--cni/--no-cni",
    "cni_server",
    default=True,
    show_default=True,
    help="Answer the plainnet CNI plugin on this node (@plainnet-cni).",
)
@click.option(
    "--network-policy/--no-network-policy",
    default=False,
    envvar="PLAINNET_NETWORK_POLICY",
    show_default=True,
    help="Enforce Kubernetes NetworkPolicies for this node's pods with nftables "
    "(Kubernetes datastore; needs deploy/network-policy.yaml's RBAC).",
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
    network_policy: bool,
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
    if network_policy and datastore != "kubernetes":
        raise PlainnetError(
            "--network-policy needs --datastore kubernetes (policies, pods and namespaces "
            "come from the API server)"
        )
    from plainnet.agent.startup import AgentSettings

    listen = listen_address(metrics)
    settings = AgentSettings(
        node_name=node_name,
        node_addresses=tuple(_address(a) for a in node_ips),  # type: ignore[misc]
        run_dir=run_dir,
        resync_seconds=resync,
        renew_seconds=max(lease_ttl / 3, 1),
    )
    store: Datastore
    if datastore == "kubernetes":
        from plainnet.datastore.kubernetes import KubernetesDatastore
        from plainnet.datastore.records import ClusterNetwork

        if not cluster_cidrs:
            raise PlainnetError(
                "the Kubernetes datastore needs --cluster-cidr (the range node podCIDRs come from)"
            )
        config = network_config(cluster_cidrs)
        chosen, options = chosen_backend(backend, vxlan_vni, vxlan_port)
        network = ClusterNetwork(tuple(config.cluster_cidrs), chosen.name, options)
        store = KubernetesDatastore(node_name, network, chosen.record_type, kubeconfig)
    else:
        from plainnet.datastore.etcd import EtcdDatastore

        assert etcd_endpoint is not None
        store = EtcdDatastore(etcd_endpoint, etcd_prefix, ttl_seconds=lease_ttl)
    run_node(settings, store, listen, cni_server, kubeconfig if network_policy else False)


def run_node(
    settings: AgentSettings,
    store: Datastore,
    listen: tuple[str, int],
    cni: bool,
    policy_kubeconfig: Path | Literal[False] | None = False,
) -> None:
    """The node's processes, side by side, until SIGTERM or SIGINT: the metrics and
    health endpoint and the CNI server (both from the first second: until the agent has
    this node's facts, CNI STATUS says 50 and ADD "try again later"), the agent, and —
    unless ``policy_kubeconfig`` is False — the network policy enforcer."""
    from plainnet.agent.kernel import KernelRoutes, forwarding_off
    from plainnet.agent.metrics import AgentMetrics, serve_http
    from plainnet.agent.reactor import Agent, run_until_signalled
    from plainnet.agent.reconciler import single_malloc_arena, tune_cycle_collector
    from plainnet.node_state import NodeStatePublisher

    single_malloc_arena()  # before the kernel worker thread exists
    tune_cycle_collector()
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # one line per API request
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    node_states = NodeStatePublisher(settings.run_dir)

    async def main(stop: asyncio.Event) -> None:
        metrics = AgentMetrics()
        kernel = KernelRoutes(settings.protocol)
        agent = Agent(settings, store, kernel, metrics, node_states.publish)
        cni_server = None
        if cni:
            from plainnet.cni.server import CniServer

            cni_server = CniServer(settings.run_dir, node_states.current).start()
        http = None

        def ready() -> tuple[bool, str]:
            """The agent's readiness, forwarding on (the init container turns it on; an
            unprivileged agent cannot), and no pod stranded in a subnet this node lost."""
            ok, why = agent.ready()
            state = node_states.current()
            off = forwarding_off(s.version for s in state.subnets) if state else []
            if ok and off:
                return False, (
                    f"{', '.join(off)} is off: pods on this node cannot reach other nodes; "
                    f"run `sysctl -w {off[0]}=1` on the node (the install init container "
                    f"does this when the agent's pod starts)"
                )
            lost = cni_server is not None and state is not None and state.lost_subnets
            stranded = cni_server.handler().stranded_pods() if lost else []
            if ok and stranded:
                subnets = sorted({str(subnet) for subnet, _ in stranded})
                pods = ", ".join(r.owner.container_id[:12] for _, r in stranded[:10])
                return False, (
                    f"{len(stranded)} pods hold addresses from {', '.join(subnets)}, lost to "
                    f"another node: delete them so they are recreated ({pods})"
                )
            return ok, why

        enforcing = None
        if policy_kubeconfig is False:
            from plainnet.policy import nft as policy_nft

            # the add-on is off: a table an earlier run left would keep enforcing
            if await asyncio.to_thread(policy_nft.remove):
                logging.getLogger("plainnet.policy").info(
                    "network policy is off: removed the table inet plainnet-policy"
                )
        else:
            from lightkube import AsyncClient

            from plainnet.datastore.kubernetes import load_kube_config
            from plainnet.policy.enforcer import PolicyEnforcer, PolicyMetrics

            enforcer = PolicyEnforcer(
                AsyncClient(config=load_kube_config(policy_kubeconfig)),
                settings.node_name,
                PolicyMetrics(metrics.registry),
                settings.resync_seconds,
            )
            enforcing = asyncio.create_task(enforcer.run_supervised())
            agent_ready = ready

            def ready() -> tuple[bool, str]:
                ok, why = agent_ready()
                return enforcer.ready() if ok else (ok, why)

        try:
            if listen[1]:
                http = await serve_http(listen[0], listen[1], metrics, agent.alive, ready)
            await agent.run(stop)
        finally:
            if enforcing is not None:
                enforcing.cancel()
            if http is not None:
                http.close()
            if cni_server is not None:
                cni_server.stop()

    run_until_signalled(main)


@agent.command()
@run_dir_option()
@click.option(
    "--keep-pods",
    is_flag=True,
    help="Keep the pod bridge and the pod address records, so running pods keep their "
    "addresses while another network agent (e.g. flanneld) takes over the node's routes.",
)
def cleanup(run_dir: Path, keep_pods: bool) -> None:
    """Remove everything plainnet created on this node: its routes and nexthops, every
    backend's devices, the pod bridge, the masquerade and network policy tables, the
    state file and the pod
    address records. Routes, devices and tables of other software are never touched.
    Delete the node's pods first: their addresses go with the bridge (or pass
    --keep-pods when another agent takes the node over with its pods running)."""
    from plainnet.agent import ROUTE_PROTOCOL
    from plainnet.agent.backends import BACKENDS, load_backend
    from plainnet.agent.kernel import KernelRoutes
    from plainnet.cni import masquerade
    from plainnet.cni.netlink_dataplane import remove_pod_bridges
    from plainnet.node_state import FILE_NAME
    from plainnet.policy import nft as policy_nft
    from plainnet.policy.compiler import TABLE as POLICY_TABLE

    kernel = KernelRoutes(ROUTE_PROTOCOL)
    try:
        routes, nexthops = kernel.remove_all()
        devices = sorted({d for name in BACKENDS for d in load_backend(name).remove(kernel)})
    finally:
        kernel.close()
    bridges = [] if keep_pods else remove_pod_bridges()
    table = masquerade.remove()
    policy_table = policy_nft.remove()
    (run_dir / FILE_NAME).unlink(missing_ok=True)
    if not keep_pods:
        shutil.rmtree(run_dir / "ipam", ignore_errors=True)
    removed = [f"{routes} routes and {nexthops} nexthops (protocol {ROUTE_PROTOCOL})"]
    removed += [f"the device {d}" for d in [*devices, *bridges]]
    if table:
        removed.append(f"the nftables table inet {masquerade.TABLE}")
    if policy_table:
        removed.append(f"the nftables table inet {POLICY_TABLE}")
    click.echo("removed " + ", ".join(removed))
