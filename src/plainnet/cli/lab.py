"""``plainnet lab``: an emulated cluster network on this machine."""

from __future__ import annotations

import json
import os
import sys

import click
from rich.table import Table

from plainnet.cli.options import backend_option
from plainnet.cli.output import console
from plainnet.errors import PlainnetError
from plainnet.lab import netns
from plainnet.lab.builder import (
    STATE_DIR,
    Lab,
    describe,
    remove_everything,
    remove_lab,
    running_labs,
)
from plainnet.lab.cluster import KUBECONFIG, ClusterSpec, LabCluster
from plainnet.lab.reachability import probe_all_pairs, probe_pods
from plainnet.lab.topology import PREFIX, TOPOLOGIES, lab_of_namespace


def _require_root() -> None:
    if os.geteuid() != 0:
        raise PlainnetError("the lab creates network namespaces and needs root: run it as root")


def _pick_lab(name: str | None) -> Lab:
    if name is not None:
        return Lab.load(name)
    labs = running_labs()
    if len(labs) == 1:
        return Lab.load(labs[0])
    if not labs:
        raise PlainnetError("no lab is up: start one with `plainnet lab up`")
    raise PlainnetError(f"several labs are up ({', '.join(labs)}): name one with --lab NAME")


@click.group()
def lab() -> None:
    """Emulated clusters in network namespaces (all names start with pn-)."""


@lab.command()
@click.option("--name", default="demo", show_default=True, help="Lab name (a-z, 0-9).")
@click.option(
    "--topology",
    type=click.Choice(sorted(TOPOLOGIES)),
    default="single-segment",
    show_default=True,
    help="Underlay shape.",
)
@click.option("--hosts", type=click.IntRange(1, 200), default=3, show_default=True)
@click.option(
    "--ipv6/--no-ipv6",
    default=True,
    show_default=True,
    help="Dual-stack: IPv6 on the underlay and, with --nodes, for pods too.",
)
@click.option(
    "--nodes",
    type=click.IntRange(0, 200),
    default=0,
    help="Build a cluster: etcd, this many nodes each running plainnet agent, pods.",
)
@click.option("--pods-per-node", type=click.IntRange(0, 50), default=2, show_default=True)
@click.option(
    "--datastore",
    type=click.Choice(["etcd", "kubernetes"]),
    default="etcd",
    show_default=True,
    help="With --nodes: where peer records live. kubernetes runs a "
    "real kube-apiserver and kube-controller-manager (IPv4; built once per machine).",
)
@click.option(
    "--allocator",
    type=click.Choice(["kcm", "plainnet"]),
    default="kcm",
    show_default=True,
    help="With --datastore kubernetes: who assigns podCIDRs.",
)
@backend_option
@click.option(
    "--network-policy",
    is_flag=True,
    help="With --datastore kubernetes: every agent enforces NetworkPolicies; lab pods "
    "are Pod objects in the lab's API server (namespace default, label pod=<name>).",
)
@click.option(
    "--underlay",
    type=click.Choice(["dual", "ipv4", "ipv6"]),
    default="dual",
    show_default=True,
    help="With --nodes: the node address families VXLAN travels in (dual: IPv4 pods over "
    "IPv4 and IPv6 pods over IPv6, as Flannel does; ipv4/ipv6: every pod over that one).",
)
def up(
    name: str,
    topology: str,
    hosts: int,
    ipv6: bool,
    nodes: int,
    pods_per_node: int,
    datastore: str,
    allocator: str,
    backend: str,
    network_policy: bool,
    underlay: str,
) -> None:
    """Build a lab and show what it holds."""
    _require_root()
    if network_policy and datastore != "kubernetes":
        raise PlainnetError("--network-policy needs --datastore kubernetes (and --nodes)")
    if underlay == "ipv6" and not ipv6:
        raise PlainnetError("--underlay ipv6 needs IPv6 in the lab: drop --no-ipv6")
    if nodes:
        # Kubernetes v1.20 needs a feature gate for dual-stack node CIDRs: IPv4 there.
        dual = ipv6 and datastore == "etcd"
        cidrs = ["10.244.0.0/16"] + (["fd00:10:244::/56"] if dual else [])
        cluster = LabCluster(
            ClusterSpec(
                name=name,
                nodes=nodes,
                pods_per_node=pods_per_node,
                cluster_cidrs=cidrs,
                datastore=datastore,
                allocator=allocator,
                topology=topology,
                backend=backend,
                underlay={"dual": 0, "ipv4": 4, "ipv6": 6}[underlay],
                network_policy=network_policy,
            )
        ).up(timeout=120)
        _print_status(cluster.lab)
        _print_pods(cluster)
        return
    built = Lab(TOPOLOGIES[topology](name, hosts, ipv6=ipv6)).up()
    _print_status(built)


@lab.command()
@click.argument("name", required=False)
def status(name: str | None) -> None:
    """Show the labs that are up, as read from the kernel."""
    _require_root()
    names = [name] if name else running_labs()
    if not names:
        console.print("no lab is up")
        return
    for lab_name in names:
        try:
            _print_status(Lab.load(lab_name))
        except PlainnetError:
            leftovers = [
                ns for ns in netns.list_namespaces(PREFIX) if lab_of_namespace(ns) == lab_name
            ]
            console.print(
                f"lab {lab_name}: no record, leftover namespaces {', '.join(leftovers)}"
                f" — remove with `plainnet lab down {lab_name}`"
            )


def _print_pods(cluster: LabCluster) -> None:
    table = Table(title=f"lab {cluster.spec.name}: pods")
    for column in ("pod", "node", "namespace", "addresses"):
        table.add_column(column)
    for pod in cluster.pods:
        table.add_row(pod.name, pod.node, pod.namespace, "\n".join(map(str, pod.addresses)))
    console.print(table)
    for node in cluster.nodes:
        routes = {**cluster.node_routes(node, 4), **cluster.node_routes(node, 6)}
        listed = ", ".join(f"{dst} via {via}" for dst, via in routes.items()) or "none"
        console.print(f"{node} plainnet routes (proto 158): {listed}")
        for refusal in cluster.refusals(node):
            console.print(f"{node} refused peer record of node {refusal}")


def _print_status(built: Lab) -> None:
    facts = describe(built)
    table = Table(title=f"lab {built.name}")
    for column in ("host", "role", "namespace", "addresses", "processes"):
        table.add_column(column)
    for host_name, entry in facts["hosts"].items():
        if not entry["exists"]:
            table.add_row(host_name, entry["role"], entry["namespace"], "[red]missing[/red]", "")
            continue
        table.add_row(
            host_name,
            entry["role"],
            entry["namespace"],
            "\n".join(entry["addresses"]),
            str(entry["processes"]),
        )
    console.print(table)


@lab.command()
@click.option("--lab", "lab_name", help="Which lab (default: the only one up).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def check(lab_name: str | None, as_json: bool) -> None:
    """Test every pod against every other pod (ICMP and TCP, source address preserved) —
    or, in a lab without pods, every host against every other (ICMP). Exit 1 on any
    failure."""
    _require_root()
    built = _pick_lab(lab_name)
    cluster = LabCluster.load(built.name)
    if cluster is not None and cluster.pods:
        probes = probe_pods(cluster.pods)
        failed = [p for p in probes if not p.ok]
        summary = (
            f"{len(probes) - len(failed)} of {len(probes)} pod-to-pod probes passed "
            f"(ICMP and TCP; the target saw the source pod's own address)"
        )
        rows = [(p.source, p.target, str(p.address), p.icmp, p.tcp, p.seen_from) for p in probes]
        columns = ("from", "to", "address", "icmp", "tcp", "seen from")
    else:
        host_probes = probe_all_pairs(built)
        failed = [p for p in host_probes if not p.reached]
        summary = f"{len(host_probes) - len(failed)} of {len(host_probes)} probes answered"
        rows = [(p.source, p.target, str(p.address), p.reached) for p in host_probes]
        columns = ("from", "to", "address", "icmp")
    if as_json:
        click.echo(
            json.dumps(
                {
                    "lab": built.name,
                    "ok": not failed,
                    "summary": summary,
                    "probes": [dict(zip(columns, row, strict=True)) for row in rows],
                },
                indent=1,
            )
        )
    else:
        table = Table(title=f"lab {built.name}: reachability")
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*(_mark(v) if isinstance(v, bool) else str(v or "") for v in row))
        console.print(table)
        console.print(summary)
    if failed:
        sys.exit(1)


@lab.command()
@click.option("--lab", "lab_name", help="Which lab (default: the only one up).")
@click.option("--probe", is_flag=True, help="Also probe every peer (plainnet doctor --probe).")
@click.option("--json", "as_json", is_flag=True, help="Every node's findings as JSON.")
def doctor(lab_name: str | None, probe: bool, as_json: bool) -> None:
    """Run plainnet doctor on every node of a lab cluster (with each agent's run dir,
    metrics endpoint and datastore); exit 1 on any FAIL."""
    from plainnet.cli.doctor import render
    from plainnet.doctor.checks import Finding

    _require_root()
    built = _pick_lab(lab_name)
    cluster = LabCluster.load(built.name)
    if cluster is None:
        raise PlainnetError(f"lab {built.name} is no cluster (built with --hosts?): no agents")
    options = ("--probe",) if probe else ()
    found = {node: cluster.doctor(node, *options) for node in cluster.nodes}
    failed = any(status for status, _ in found.values())
    if as_json:
        click.echo(json.dumps({n: f for n, (_, f) in found.items()}, indent=1))
    else:
        for node, (_, findings) in found.items():
            click.echo(f"== {node}")
            click.echo(render([Finding(**f) for f in findings]))
    if failed:
        sys.exit(1)


def _mark(ok: bool) -> str:
    return "[green]yes[/green]" if ok else "[red]NO[/red]"


@lab.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--lab", "lab_name", help="Which lab (default: the only one up).")
@click.argument("host")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec(lab_name: str | None, host: str, command: tuple[str, ...]) -> None:
    """Run COMMAND inside lab host HOST:  plainnet lab exec host1 -- ping 10.250.0.3"""
    _require_root()
    if command[0] == "--":
        command = command[1:]
    if not command:
        raise PlainnetError("no command given: plainnet lab exec HOST -- COMMAND [ARGS...]")
    namespace = _pick_lab(lab_name).host(host).namespace
    netns.enter(namespace)
    try:
        os.execvp(command[0], list(command))
    except FileNotFoundError:
        raise PlainnetError(f"command not found: {command[0]}") from None


@lab.command()
@click.option("--lab", "lab_name", help="Which lab (default: the only one up).")
def kubeconfig(lab_name: str | None) -> None:
    """Print the path of an admin kubeconfig for the lab's API server (a lab with
    --datastore kubernetes), reached through a loopback door on this machine:

    kubectl --kubeconfig "$(plainnet lab kubeconfig)" apply -f policy.yaml"""
    _require_root()
    built = _pick_lab(lab_name)
    path = STATE_DIR / built.name / KUBECONFIG
    if not path.exists():
        raise PlainnetError(
            f"lab {built.name} has no API server: build one with "
            f"`plainnet lab up --nodes N --datastore kubernetes`"
        )
    click.echo(str(path))


@lab.command()
@click.argument("name", required=False)
@click.option(
    "--all",
    "everything",
    is_flag=True,
    help="Remove every pn- namespace and link on this machine, recorded or not.",
)
def down(name: str | None, everything: bool) -> None:
    """Tear a lab down (default: demo), stopping the processes inside it."""
    _require_root()
    if everything:
        namespaces, links = remove_everything()
        console.print(f"removed {len(namespaces)} namespaces and {len(links)} links")
        return
    removed = remove_lab(name or "demo")
    console.print(f"lab {name or 'demo'}: removed {len(removed)} namespaces")
