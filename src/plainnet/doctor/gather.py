"""The adapter of ``plainnet doctor``: read one node — sysctls, nftables, the agent's
``/healthz`` and ``/metrics``, ``subnet.json``, the pod bridge, the CNI conf dir, the
kernel's routes (netlink, as the agent reads them), the IPAM reservations and the
datastore's records — into an :class:`~plainnet.doctor.checks.Observation`. It changes
nothing (``--release-leaked`` aside, which frees reservations through the IPAM store).

Whatever cannot be read is recorded as not read; a machine that runs no plainnet gives
an observation where most checks say so, never a traceback.
"""

from __future__ import annotations

import asyncio
import os
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from ipaddress import ip_interface, ip_network
from pathlib import Path
from typing import Any

from plainnet.doctor.checks import ForwardChain, Observation, Route
from plainnet.ipam.types import IPNetwork
from plainnet.node_state import NodeState, read_node_state
from plainnet.text import printable

MAX_METRICS_BYTES = 4 << 20
MAX_RESERVATIONS_BYTES = 16 << 20


@dataclass
class Sources:
    """Where to look: the agent's own settings (``plainnet doctor``'s flags, whose
    defaults are the agent's)."""

    node: str
    run_dir: Path
    agent: str
    cni_dir: Path
    etcd_endpoint: str | None
    etcd_prefix: str
    kubeconfig: Path | None
    service_cidr: IPNetwork | None


def _sysctl(key: str) -> str | None:
    try:
        return Path("/proc/sys", *key.split(".")).read_text().strip()
    except OSError:
        return None


def forward_chains() -> list[ForwardChain] | None:
    """Base chains on the forward hook with what their rules accept by address."""
    from plainnet.nft import ruleset_json

    document = ruleset_json()
    if document is None:
        return None
    chains: dict[tuple[str, str, str], str] = {}
    accepts: dict[tuple[str, str, str], list[IPNetwork]] = {}
    for item in document.get("nftables", []):
        chain = item.get("chain") if isinstance(item, dict) else None
        if isinstance(chain, dict) and chain.get("hook") == "forward":
            key = (str(chain.get("family")), str(chain.get("table")), str(chain.get("name")))
            chains[key] = str(chain.get("policy", "accept"))
        rule = item.get("rule") if isinstance(item, dict) else None
        if isinstance(rule, dict):
            key = (str(rule.get("family")), str(rule.get("table")), str(rule.get("chain")))
            accepts.setdefault(key, []).extend(_accepted(rule.get("expr") or []))
    return [
        ForwardChain(*key, policy=policy, accepts=tuple(accepts.get(key, ())))
        for key, policy in chains.items()
    ]


def _accepted(expressions: list[Any]) -> list[IPNetwork]:
    """The address prefixes an accepting rule matches (every address if it matches
    none: an unconditional accept); nothing for any other rule."""
    if not any(isinstance(e, dict) and "accept" in e for e in expressions):
        return []
    found, matches = [], 0
    for expression in expressions:
        match = expression.get("match") if isinstance(expression, dict) else None
        if not isinstance(match, dict):
            continue
        matches += 1
        left, right = match.get("left"), match.get("right")
        field = (left or {}).get("payload", {}).get("field") if isinstance(left, dict) else None
        if field not in ("saddr", "daddr") or match.get("op") not in ("==", "in"):
            continue
        try:
            if isinstance(right, dict) and "prefix" in right:
                prefix = right["prefix"]
                found.append(ip_network(f"{prefix['addr']}/{prefix['len']}", strict=False))
            elif isinstance(right, str):
                found.append(ip_network(right, strict=False))
        except (ValueError, KeyError, TypeError):
            continue
    if not matches:
        return [ip_network("0.0.0.0/0"), ip_network("::/0")]
    return found


def agent_health(address: str) -> tuple[tuple[bool | None, str], dict[str, float], str]:
    """((healthy, what /healthz said), refusals by reason if any are current, URL)."""
    url = f"http://{address}"
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=3) as reply:
            health: tuple[bool | None, str] = (True, reply.read(200).decode("utf-8", "replace"))
    except urllib.error.HTTPError as exc:
        health = (False, exc.read(200).decode("utf-8", "replace").strip())
    except (OSError, ValueError) as exc:
        return (None, printable(str(getattr(exc, "reason", exc)), 120)), {}, url
    refused: dict[str, float] = {}
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=3) as reply:
            text = reply.read(MAX_METRICS_BYTES).decode("utf-8", "replace")
    except (OSError, ValueError):
        return health, refused, url
    now = 0.0
    for line in text.splitlines():
        if line.startswith('plainnet_peers{state="refused"}'):
            now = float(line.split()[-1])
        elif line.startswith("plainnet_peer_records_refused_total{"):
            reason = line.split('reason="', 1)[-1].split('"', 1)[0]
            refused[reason] = float(line.split()[-1])
    return health, (refused if now > 0 else {}), url


def _stores(run_dir: Path) -> list[Any]:
    """The CNI plugin's pod address store of each node subnet under ``run_dir``."""
    from plainnet.ipam.file_store import STATE_FILE, FilePodAddressStore

    found = sorted((run_dir / "ipam").glob(f"*/{STATE_FILE}"))
    return [FilePodAddressStore(state.parent) for state in found]


def _gone(owner: Any, links: set[str]) -> bool:
    """Whether a reservation's container has no interface on this node any more."""
    from plainnet.cni.dataplane import host_veth_name

    return host_veth_name(owner.container_id, owner.ifname) not in links


def reservations(run_dir: Path) -> list[tuple[Any, Any]]:
    """(address, owner) of every pod address the CNI plugin holds (an unreadable
    store is left out: its own commits say so)."""
    from plainnet.ipam.errors import IpamError
    from plainnet.ipam.file_store import STATE_FILE

    found = []
    for store in _stores(run_dir):
        try:
            if (store.directory / STATE_FILE).stat().st_size > MAX_RESERVATIONS_BYTES:
                continue
            found.extend(store.snapshot().reservations.items())
        except (IpamError, OSError):
            continue
    return found


def observe(sources: Sources) -> Observation:
    from plainnet.agent import ROUTE_PROTOCOL
    from plainnet.agent.backends import all_device_names
    from plainnet.agent.backends.vxlan import DEVICE_NAME
    from plainnet.agent.kernel import KernelRoutes
    from plainnet.agent.local_networks import node_networks
    from plainnet.cni.config import DEFAULT_BRIDGE
    from plainnet.cni.install import CONFLIST

    state = read_node_state(sources.run_dir)
    o = Observation(
        node=state.node if state else sources.node,
        route_protocol=ROUTE_PROTOCOL,
        run_dir=str(sources.run_dir),
        state=state,
        cni_dir=str(sources.cni_dir),
        bridge=DEFAULT_BRIDGE,
        cni_conflist=CONFLIST,
        vxlan_device=DEVICE_NAME,
        service_cidr=sources.service_cidr,
    )
    kernel = KernelRoutes(ROUTE_PROTOCOL)
    try:
        links = kernel.sock.links()
        names = {index: name for index, (name, _) in links.items()}
        found = kernel.local_networks(all_device_names())
        cidrs = state.cluster_cidrs if state else ()
        mine = node_networks(found, cidrs, state.subnets if state else ())
        o.local = list(mine)
        bridge = next((i for i, n in names.items() if n == o.bridge), None)
        if bridge is not None:
            o.bridge_addresses = tuple(
                ip_interface(f"{a.address}/{a.prefixlen}")
                for a in kernel.sock.addresses()
                if a.ifindex == bridge
            )
        nexthops = {n.id: n for n in kernel.sock.nexthops()}
        for version in (4, 6):
            for protocol, route in kernel.sock.main_routes(version):
                gateway, oif = route.gateway, route.oif
                if route.nexthop_id is not None and route.nexthop_id in nexthops:
                    gateway = nexthops[route.nexthop_id].gateway
                    oif = nexthops[route.nexthop_id].oif
                o.routes.append(Route(route.destination, gateway, names.get(oif or -1), protocol))
        vxlan = next((i for i, n in names.items() if n == DEVICE_NAME), None)
        uplinks = sorted({n.ifname for n in mine})
        o.pod_interfaces = tuple(uplinks + ([DEVICE_NAME] if vxlan is not None else []))
        if vxlan is not None and mine:
            underlay = next(i for i, n in names.items() if n == mine[0].ifname)
            o.vxlan_mtu = (links[vxlan][1], links[underlay][1], mine[0].network.version)
        held = reservations(sources.run_dir)
        o.pods = len(held)
        links_now = set(names.values())
        o.leaked = [(a, owner.container_id) for a, owner in held if _gone(owner, links_now)]
    finally:
        kernel.close()
    keys = ["net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding",
            "net.ipv4.conf.all.rp_filter", "net.bridge.bridge-nf-call-iptables"]  # fmt: skip
    keys += [f"net.ipv4.conf.{name}.rp_filter" for name in o.pod_interfaces]
    o.sysctls = {key: _sysctl(key) for key in keys}
    o.br_netfilter = Path("/proc/sys/net/bridge/bridge-nf-call-iptables").exists()
    o.forward_chains = forward_chains()
    o.agent, o.refused, o.agent_url = agent_health(sources.agent)
    try:
        o.cni_files = tuple(sorted(os.listdir(sources.cni_dir)))
    except OSError:
        o.cni_files = ()
    if state is not None:
        o.peers, o.peers_error = _peers(sources, state)
    if sources.kubeconfig is not None:  # with no subnet yet, the usual reason is here
        o.node_pod_cidrs = _own_pod_cidrs(sources.kubeconfig, o.node)
    return o


def _own_pod_cidrs(kubeconfig: Path, node: str) -> tuple[IPNetwork, ...] | None:
    """This node's podCIDRs on its Node object, read as the datastore reads them; None
    if it cannot be read."""
    from lightkube import Client, KubeConfig
    from lightkube.resources.core_v1 import Node

    from plainnet.datastore.kube_nodes import pod_cidrs

    try:
        found = Client(KubeConfig.from_file(str(kubeconfig)), timeout=10).get(Node, name=node)
        return tuple(ip_network(c) for c in pod_cidrs(found))
    except Exception:  # unreachable, refused, no such Node, a bad value: not known
        return None


def _peers(sources: Sources, state: NodeState) -> tuple[list | None, str]:
    """The datastore's valid peer records, read by the agent's own datastore code."""
    from plainnet.datastore.records import DatastoreError, PeerRecord

    async def read() -> list:
        if sources.kubeconfig is not None:
            from plainnet.agent.backends import load_backend
            from plainnet.datastore.kubernetes import KubernetesDatastore
            from plainnet.datastore.records import ClusterNetwork

            network = ClusterNetwork(tuple(state.cluster_cidrs), state.backend, {})
            record_type = load_backend(state.backend).record_type
            store: Any = KubernetesDatastore(state.node, network, record_type, sources.kubeconfig)
        else:
            from plainnet.datastore.etcd import EtcdDatastore

            store = EtcdDatastore(str(sources.etcd_endpoint), sources.etcd_prefix)
        try:
            snapshot = await asyncio.wait_for(store.list(), 20)
            return list(snapshot.records.values())
        finally:
            await store.close()

    if sources.kubeconfig is None and sources.etcd_endpoint is None:
        return None, "no datastore given: --etcd-endpoint or --kubeconfig"
    try:
        records = asyncio.run(read())
    except (DatastoreError, TimeoutError, OSError, ValueError) as exc:
        return None, printable(str(exc) or type(exc).__name__, 200)
    return [r for r in records if isinstance(r, PeerRecord)], ""


def release_leaked(run_dir: Path) -> list[str]:
    """Free the reservations whose container has no interface here (what the runtime's
    CNI GC would free), through the IPAM store's lock; returns what was freed."""
    links_now = {name for _, name in socket.if_nameindex()}
    freed: list[str] = []

    def drop(state: Any) -> None:
        for address, owner in list(state.reservations.items()):
            if _gone(owner, links_now):
                del state.reservations[address]
                freed.append(f"{address} ({owner.container_id[:16]})")

    for store in _stores(run_dir):
        store.run(drop)
    return freed
