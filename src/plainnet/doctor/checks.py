"""What commonly breaks pod networks, as checks over one node's
:class:`Observation`. Pure: the adapter (:mod:`plainnet.doctor.gather`) reads the
kernel, files, nftables, the agent and the datastore; everything here is a function of
what it read, so each check is tested by the observation that trips it.

Every check gives one :class:`Finding` — ok, warn or FAIL — with the fact it saw and,
unless ok, the exact command that fixes it. A check whose inputs could not be read says
so (warn) rather than guess. Values from peers (node names, addresses) are escaped and
capped before they reach a line.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Interface, IPv6Interface

from plainnet.agent.backends.vxlan.vtep import vtep_address
from plainnet.agent.local_networks import LocalNetwork, on_link_network
from plainnet.datastore.records import PeerRecord
from plainnet.ipam.types import IPAddress, IPNetwork
from plainnet.node_state import NodeState
from plainnet.text import printable

OK, WARN, FAIL = "ok", "warn", "FAIL"
#: How many routes, records or entries one line names before it counts the rest.
NAMED = 5


@dataclass(frozen=True)
class Finding:
    check: str
    status: str
    fact: str
    fix: str = ""


@dataclass(frozen=True)
class ForwardChain:
    """A base chain on the forward hook (nftables; iptables-nft's FORWARD is one)."""

    family: str
    table: str
    chain: str
    policy: str
    #: the source or destination prefixes its rules accept (0.0.0.0/0: any)
    accepts: tuple[IPNetwork, ...] = ()


@dataclass(frozen=True)
class Route:
    destination: IPNetwork
    gateway: IPAddress | None
    device: str | None
    protocol: int


@dataclass
class Observation:
    node: str
    route_protocol: int
    run_dir: str
    sysctls: dict[str, str | None] = field(default_factory=dict)
    #: the interfaces pod traffic arrives on (the node's uplink, the VXLAN device)
    pod_interfaces: tuple[str, ...] = ()
    forward_chains: list[ForwardChain] | None = None  # None: nft could not be read
    br_netfilter: bool = False
    #: (healthy or None if it did not answer, what it said)
    agent: tuple[bool | None, str] = (None, "")
    agent_url: str = ""
    refused: dict[str, float] = field(default_factory=dict)
    state: NodeState | None = None
    bridge: str = "cbr0"
    #: None: no bridge
    bridge_addresses: tuple[IPv4Interface | IPv6Interface, ...] | None = None
    pods: int = 0
    cni_dir: str = "/etc/cni/net.d"
    cni_files: tuple[str, ...] = ()
    cni_conflist: str = "10-plainnet.conflist"
    routes: list[Route] = field(default_factory=list)
    #: the networks this node is on (not plainnet's devices or pod bridges)
    local: list[LocalNetwork] = field(default_factory=list)
    #: the peer records of the datastore (None: not read; the reason in peers_error)
    peers: list[PeerRecord] | None = None
    peers_error: str = ""
    vxlan_device: str = "plainnet.vxlan"
    vxlan_port: int = 8472
    #: (VXLAN device MTU, its underlay device's MTU, underlay family) or None
    vxlan_mtu: tuple[int, int, int] | None = None
    #: this node's podCIDRs on its Node object (Kubernetes datastore), None: not known
    node_pod_cidrs: tuple[IPNetwork, ...] | None = None
    service_cidr: IPNetwork | None = None
    #: pod addresses whose container has no interface on this node any more
    leaked: list[tuple[IPAddress, str]] = field(default_factory=list)


def _argument(text: str, limit: int = 200) -> str | None:
    """``text`` as one shell word for a fix command — quoted, since names come from
    peers and files — or None where it cannot be shown as it is (unprintable, long):
    a fix must never be a command that does something else when pasted."""
    if len(text) > limit or printable(text, limit) != text:
        return None
    return shlex.quote(text)


def _named(items: list[str]) -> str:
    shown = ", ".join(items[:NAMED])
    return shown + (f" and {len(items) - NAMED} more" if len(items) > NAMED else "")


def installed(o: Observation) -> list[Finding]:
    """A first line where this machine runs no plainnet at all (no agent, no
    ``subnet.json``, no plainnet route): the other checks then say why, one by one."""
    if o.state is not None or o.agent[0] is not None:
        return []
    if any(r.protocol == o.route_protocol for r in o.routes):
        return []
    return [
        Finding(
            "plainnet",
            WARN,
            f"this machine runs no plainnet: no agent, no {o.run_dir}/subnet.json, "
            "no plainnet route",
            "plainnet advise, then install (docs/install.md)",
        )
    ]


def forwarding(o: Observation) -> Finding:
    families = {c.version for c in (o.state.cluster_cidrs if o.state else ())} or {4}
    off = [
        key
        for version, key in ((4, "net.ipv4.ip_forward"), (6, "net.ipv6.conf.all.forwarding"))
        if version in families and o.sysctls.get(key) != "1"
    ]
    if off:
        return Finding(
            "forwarding",
            FAIL,
            f"{', '.join(off)} is off: this node routes no pod traffic",
            " && ".join(f"sysctl -w {k}=1" for k in off),
        )
    return Finding("forwarding", OK, "IP forwarding is on")


def rp_filter(o: Observation) -> Finding:
    every = o.sysctls.get("net.ipv4.conf.all.rp_filter") or "0"
    strict = [
        name
        for name in o.pod_interfaces
        if max(every, o.sysctls.get(f"net.ipv4.conf.{name}.rp_filter") or "0") == "1"
    ]
    if strict:
        keys = ["all", *strict]
        return Finding(
            "rp-filter",
            WARN,
            f"strict reverse-path filter on {', '.join(strict)}: "
            "pod traffic that returns by another path is dropped",
            " && ".join(f"sysctl -w net.ipv4.conf.{k}.rp_filter=2" for k in keys),
        )
    return Finding("rp-filter", OK, "no strict reverse-path filter where pod traffic arrives")


#: The address families a chain of an nftables family sees.
FAMILY_VERSIONS = {"ip": (4,), "ip6": (6,), "inet": (4, 6), "bridge": (4, 6)}


def _unaccepted(o: Observation, chain: ForwardChain) -> list[IPNetwork]:
    """The cluster CIDRs a dropping forward chain drops (its family's, not accepted)."""
    if chain.policy != "drop":
        return []
    cidrs = o.state.cluster_cidrs if o.state else ()
    return [
        cidr
        for cidr in cidrs
        if cidr.version in FAMILY_VERSIONS.get(chain.family, ())
        and not any(a.version == cidr.version and cidr.subnet_of(a) for a in chain.accepts)  # type: ignore[arg-type]
    ]


def _dropping(o: Observation) -> list[ForwardChain]:
    return [c for c in o.forward_chains or [] if _unaccepted(o, c)]


def forward_policy(o: Observation) -> Finding:
    if o.forward_chains is None:
        return Finding(
            "forward-policy",
            WARN,
            "nftables could not be read (is nft installed?)",
            "apt-get install nftables",
        )
    dropping = _dropping(o)
    if not dropping:
        return Finding("forward-policy", OK, "no forward chain drops pod traffic")
    chain = dropping[0]
    fixes = [
        f"nft insert rule {chain.family} {chain.table} {chain.chain} "
        f"{'ip' if c.version == 4 else 'ip6'} {side} {c} accept"
        for c in _unaccepted(o, chain)
        for side in ("daddr", "saddr")
    ]
    return Finding(
        "forward-policy",
        FAIL,
        f"chain {chain.family} {chain.table} {chain.chain} drops forwarded packets (policy "
        f"drop; Docker sets it) and accepts nothing of the cluster CIDR",
        " && ".join(fixes),
    )


def br_netfilter(o: Observation) -> Finding:
    calls = o.sysctls.get("net.bridge.bridge-nf-call-iptables")
    if o.br_netfilter and calls == "1" and _dropping(o):
        return Finding(
            "br-netfilter",
            WARN,
            "br_netfilter hands bridged pod traffic to the "
            "dropping forward chain: pods of this node cannot reach each other "
            "either",
            "see forward-policy",
        )
    what = "loaded" if o.br_netfilter else "not loaded"
    return Finding("br-netfilter", OK, f"br_netfilter {what}; nothing drops bridged traffic")


def agent(o: Observation) -> Finding:
    healthy, said = o.agent
    if healthy is None:
        return Finding(
            "agent",
            FAIL,
            f"no agent answers on {o.agent_url} ({said})",
            "start the agent: kubectl -n kube-system rollout restart daemonset "
            "plainnet-agent (or run plainnet agent ...)",
        )
    if not healthy:
        return Finding(
            "agent",
            FAIL,
            f"the agent is unhealthy: {printable(said, 200)}",
            "kubectl -n kube-system logs -l app=plainnet-agent (its log says why)",
        )
    return Finding("agent", OK, f"the agent answers on {o.agent_url}")


def node_state(o: Observation) -> Finding:
    path = f"{o.run_dir}/subnet.json"
    if o.state is None:
        return Finding(
            "subnet",
            FAIL,
            f"no {path}: the agent holds no subnet, and the CNI plugin cannot give pods addresses",
            f"start the agent; it writes {path} once it holds a subnet",
        )
    if o.state.lost_subnets:
        selector = _argument(f"spec.nodeName={o.node}")
        lost = ", ".join(map(str, o.state.lost_subnets))
        return Finding(
            "subnet",
            FAIL,
            f"this node lost {lost} to another node; pods with addresses from it must be recreated",
            f"kubectl delete pods -A --field-selector {selector or 'spec.nodeName=NODE'}",
        )
    subnets = ", ".join(map(str, o.state.subnets))
    return Finding("subnet", OK, f"{path}: node {printable(o.state.node, 63)} holds {subnets}")


def bridge(o: Observation) -> Finding:
    if o.state is None:
        return Finding("bridge", WARN, "no subnet yet: the bridge cannot be checked")
    if o.bridge_addresses is None:
        if o.pods:
            return Finding(
                "bridge",
                FAIL,
                f"{o.bridge} is missing but {o.pods} pod addresses are held",
                "restart the agent; the next pod's CNI ADD makes it",
            )
        return Finding("bridge", OK, f"{o.bridge} not made yet (made with the first pod)")
    missing = [
        f"{next(s.hosts())}/{s.prefixlen}"
        for s in o.state.subnets
        if not any(a.ip == next(s.hosts()) and a.network == s for a in o.bridge_addresses)
    ]
    if missing:
        fix = " && ".join(f"ip addr add {m} dev {o.bridge}" for m in missing)
        return Finding(
            "bridge",
            FAIL,
            f"{o.bridge} lacks the pod gateway {', '.join(missing)}: pods cannot leave their node",
            fix,
        )
    return Finding("bridge", OK, f"{o.bridge} holds the pod gateway")


CNI_SUFFIXES = (".conf", ".conflist", ".json")


def cni_config(o: Observation) -> Finding:
    configs = sorted(f for f in o.cni_files if f.endswith(CNI_SUFFIXES))
    if o.cni_conflist not in configs:
        return Finding(
            "cni-config",
            FAIL,
            f"no {o.cni_dir}/{o.cni_conflist}: the runtime cannot give pods a network",
            "plainnet cni install",
        )
    first = configs[0]
    if first != o.cni_conflist:
        path = f"{o.cni_dir}/{first}"
        word, off = _argument(path), _argument(path + ".off")
        return Finding(
            "cni-config",
            FAIL,
            f"{printable(path, 200)} sorts before {o.cni_conflist}: the runtime uses it instead",
            f"mv {word} {off}" if word and off else "move that file out of the directory",
        )
    return Finding("cni-config", OK, f"{o.cni_dir}/{o.cni_conflist} is the runtime's choice")


def _expected(o: Observation) -> dict[IPNetwork, tuple[str, IPAddress | None]]:
    """Each peer subnet -> (its node, the gateway a route to it must have: the node's
    address where it is on-link, the subnet's VTEP address on the VXLAN device else)."""
    found: dict[IPNetwork, tuple[str, IPAddress | None]] = {}
    if o.state is None or o.peers is None:
        return found
    mine = set(o.state.subnets)
    backend = o.state.backend
    refused = {r.key for r, _ in _later_claims(o)}
    for record in o.peers:
        if set(record.subnets) & mine or record.node == o.node or record.key in refused:
            continue
        for subnet in record.subnets:
            address = next((a for a in record.addresses if a.version == subnet.version), None)
            on_link = address is not None and on_link_network(address, o.local) is not None
            if backend == "host-gw" or (backend == "auto" and on_link):
                found[subnet] = (record.node, address)
            elif backend in ("vxlan", "auto"):
                # IPv4: the subnet's VTEP address; IPv6: the peer device's link-local
                # address (derived from its MAC: not compared here)
                vtep = vtep_address(subnet) if subnet.version == 4 else None
                found[subnet] = (record.node, vtep)
    return found


def _route_text(route: Route) -> str:
    via = f" via {route.gateway}" if route.gateway else ""
    dev = f" dev {route.device}" if route.device else ""
    return f"{route.destination}{via}{dev} proto {route.protocol}"


def peer_routes(o: Observation) -> list[Finding]:
    """Missing, wrong, shadowed and stale routes: set differences over the whole
    table, not a lookup per peer (5,000 peers in well under a second)."""
    if o.state is None or o.state.backend == "cloud":
        why = "no subnet yet" if o.state is None else "the cloud's route table carries peers"
        return [Finding(c, OK, f"not checked: {why}") for c in ROUTE_CHECKS]
    if o.peers is None:
        fact = f"peer records not read ({o.peers_error or 'no datastore given'})"
        return [Finding(c, WARN, fact, "pass the agent's datastore options") for c in ROUTE_CHECKS]
    expected = _expected(o)
    mine = {r.destination: r for r in o.routes if r.protocol == o.route_protocol}
    missing = [f"{s} (node {printable(n, 63)})" for s, (n, _) in expected.items() if s not in mine]
    wrong = [
        (s, mine[s], gateway)
        for s, (_, gateway) in expected.items()
        if s in mine and gateway is not None and mine[s].gateway != gateway
    ]
    stale = [r for d, r in mine.items() if d not in expected]
    # another route as or more specific than a peer subnet takes its traffic
    foreign = [r for r in o.routes if r.protocol != o.route_protocol]
    by_length: dict[tuple[int, int], set[IPNetwork]] = {}
    for subnet in expected:
        by_length.setdefault((subnet.version, subnet.prefixlen), set()).add(subnet)
    shadowing = []
    for route in foreign:
        for (version, length), subnets in by_length.items():
            if route.destination.version != version or route.destination.prefixlen < length:
                continue
            if route.destination.supernet(new_prefix=length) in subnets:
                shadowing.append(route)
    findings = []
    if missing:
        findings.append(
            Finding(
                "route-missing",
                FAIL,
                f"no route to {_named(missing)}",
                "restart the agent on this node (its log says why it did not install them)",
            )
        )
    else:
        findings.append(
            Finding("route-missing", OK, f"a route to each of {len(expected)} peer subnets")
        )
    if wrong:
        shown = [f"{s} via {r.gateway} (should be {g})" for s, r, g in wrong]
        findings.append(
            Finding(
                "route-gateway",
                FAIL,
                f"wrong gateway: {_named(shown)}",
                f"ip route replace {wrong[0][0]} via {wrong[0][2]} proto "
                f"{o.route_protocol}   # or restart the agent",
            )
        )
    else:
        findings.append(Finding("route-gateway", OK, "every peer route via its node"))
    if shadowing:
        shown = [_route_text(r) for r in shadowing]
        first = shadowing[0]
        via = f" via {first.gateway}" if first.gateway else ""
        findings.append(
            Finding(
                "route-shadowed",
                FAIL,
                f"foreign route takes a peer subnet's traffic: {_named(shown)}",
                f"ip route del {first.destination}{via} proto {first.protocol}",
            )
        )
    else:
        findings.append(Finding("route-shadowed", OK, "no foreign route over a peer subnet"))
    if stale:
        shown = [_route_text(r) for r in stale]
        findings.append(
            Finding(
                "route-stale",
                FAIL,
                f"plainnet route to a subnet no record holds: {_named(shown)}",
                f"ip route del {stale[0].destination} proto {o.route_protocol}",
            )
        )
    else:
        findings.append(Finding("route-stale", OK, "no plainnet route without a record"))
    return findings


ROUTE_CHECKS = ("route-missing", "route-gateway", "route-shadowed", "route-stale")


def refused_records(o: Observation) -> Finding:
    refused = {reason: n for reason, n in o.refused.items() if n > 0}
    if refused:
        shown = ", ".join(f"{printable(r, 40)}: {n:.0f}" for r, n in sorted(refused.items()))
        return Finding(
            "refused-records",
            WARN,
            f"the agent refused peer records ({shown})",
            "its log names each record and why; correct or delete them",
        )
    return Finding("refused-records", OK, "the agent refused no peer record")


def cidrs(o: Observation) -> Finding:
    if o.state is None:
        return Finding("cidrs", WARN, "no subnet yet: the cluster CIDR is not known")
    problems, fixes = [], []
    for cidr in o.state.cluster_cidrs:
        for local in o.local:
            network, device = local.network, local.ifname
            if network.version == cidr.version and network.overlaps(cidr):  # type: ignore[arg-type]
                problems.append(f"cluster CIDR {cidr} overlaps node network {network} ({device})")
                fixes.append(f"ip addr del {local.address}/{network.prefixlen} dev {device}")
        service = o.service_cidr
        if service is not None and service.version == cidr.version and service.overlaps(cidr):  # type: ignore[arg-type]
            problems.append(f"cluster CIDR {cidr} overlaps the service CIDR {service}")
    if problems:
        fix = " && ".join(fixes[:3]) if fixes and len(fixes) == len(problems) else ""
        return Finding(
            "cidrs",
            FAIL,
            "; ".join(problems[:3]),
            (fix + "   # or " if fix else "")
            + "choose a cluster CIDR no node or service range uses (plainnet advise)",
        )
    return Finding("cidrs", OK, "the cluster CIDR overlaps no node network or service range")


def _later_claims(o: Observation) -> list[tuple[PeerRecord, PeerRecord | str]]:
    """(record, who holds its address first) for each record whose node address an
    earlier claim (or this node) holds — the records the agents refuse."""
    mine = {local.address for local in o.local}
    first: dict[IPAddress, PeerRecord] = {}
    later = []
    for record in sorted(o.peers or [], key=lambda r: (r.claimed_at, r.key)):
        if record.node == o.node:
            continue
        for address in record.addresses:
            if address in mine:
                later.append((record, "this node"))
                break
            holder = first.setdefault(address, record)
            if holder is not record:
                later.append((record, holder))
                break
    return later


def duplicate_addresses(o: Observation) -> Finding:
    if o.peers is None:
        return Finding("duplicate-address", WARN, "peer records not read")
    later = _later_claims(o)
    if later:
        shown = [
            f"{printable(r.key, 80)} of {printable(r.node, 63)} claims "
            f"{'this node' if isinstance(h, str) else printable(h.node, 63)}'s address"
            for r, h in later
        ]
        key = later[0][0].key
        word = _argument(key)
        if word is None:
            fix = "delete that record (its key cannot be shown as a command)"
        elif key.startswith("/"):
            fix = f"etcdctl del {word}"
        else:
            fix = f"kubectl delete node {word}   # or correct its InternalIP"
        return Finding("duplicate-address", FAIL, f"one address, two nodes: {_named(shown)}", fix)
    return Finding("duplicate-address", OK, "every node has an address of its own")


def pod_cidr(o: Observation) -> Finding:
    if o.node_pod_cidrs is None:
        return Finding(
            "node-podcidr",
            OK,
            "no Node read (the etcd datastore, or no such Node): nothing to compare",
        )
    if not o.node_pod_cidrs:
        return Finding(
            "node-podcidr",
            FAIL,
            f"Node {printable(o.node, 63)} has no podCIDR",
            "kube-controller-manager --allocate-node-cidrs, or kubectl apply -f "
            "deploy/allocator.yaml",
        )
    return Finding("node-podcidr", OK, f"Node podCIDR {', '.join(map(str, o.node_pod_cidrs))}")


#: Bytes VXLAN adds to a packet: IPv4 + UDP + VXLAN + inner Ethernet (IPv6: 70).
VXLAN_OVERHEAD = {4: 50, 6: 70}


def vxlan_mtu(o: Observation) -> Finding:
    if o.vxlan_mtu is None:
        return Finding("vxlan-mtu", OK, "no VXLAN device")
    device, underlay, family = o.vxlan_mtu
    most = underlay - VXLAN_OVERHEAD[family]
    pods = o.state.mtu if o.state is not None else 0
    fix = f"ip link set {o.vxlan_device} mtu {most}"
    if pods > most:  # the underlay shrank under the pods: they need a smaller MTU
        fix += " && restart the agent (pods get the smaller MTU when recreated)"
    if device > most:
        return Finding(
            "vxlan-mtu",
            FAIL,
            f"{o.vxlan_device} MTU {device} > underlay MTU "
            f"{underlay} - {VXLAN_OVERHEAD[family]}: large packets are lost",
            fix,
        )
    if pods > device:
        return Finding(
            "vxlan-mtu",
            FAIL,
            f"pod MTU {pods} > {o.vxlan_device} MTU {device}: large packets between pods are lost",
            fix,
        )
    return Finding("vxlan-mtu", OK, f"{o.vxlan_device} MTU {device} fits underlay {underlay}")


def ipam_leaks(o: Observation) -> Finding:
    if o.leaked:
        shown = [f"{a} ({printable(c, 16)})" for a, c in o.leaked]
        return Finding(
            "ipam-leaks",
            FAIL,
            f"addresses held by containers that are gone: {_named(shown)}",
            "plainnet doctor --release-leaked",
        )
    return Finding("ipam-leaks", OK, f"{o.pods} pod addresses, each with its pod")


#: Every check in the order they are printed; :func:`peer_routes` gives four findings,
#: :func:`installed` one or none.
NODE_CHECKS: tuple[Callable[[Observation], Finding | list[Finding]], ...] = (
    installed,
    forwarding,
    rp_filter,
    forward_policy,
    br_netfilter,
    agent,
    node_state,
    bridge,
    cni_config,
    peer_routes,
    refused_records,
    cidrs,
    duplicate_addresses,
    pod_cidr,
    vxlan_mtu,
    ipam_leaks,
)


@dataclass(frozen=True)
class Probe:
    """One ICMP echo ``--probe`` sends (:func:`plainnet.doctor.probe.ping_all`)."""

    address: IPAddress
    #: the whole IP packet's size; with ``dont_fragment`` the path must carry it as is
    size: int = 84
    dont_fragment: bool = False


@dataclass(frozen=True)
class PeerProbes:
    """What ``--probe`` sends toward one peer (see :mod:`plainnet.doctor.probe`): the
    node itself, the node at the size pod packets reach the underlay with Don't
    Fragment, the peer's VTEP through the overlay, and its pod gateway."""

    node: str
    address: IPAddress
    size: int
    overlay: bool
    underlay: Probe
    path_mtu: Probe
    vtep: Probe | None
    pods: Probe

    @property
    def probes(self) -> tuple[Probe, ...]:
        return tuple(p for p in (self.underlay, self.path_mtu, self.vtep, self.pods) if p)


def probe_plan(o: Observation) -> list[PeerProbes]:
    """The probes toward every peer subnet's node (IPv4)."""
    if o.state is None or o.peers is None:
        return []
    expected = _expected(o)
    by_node = {r.node: r for r in o.peers}
    plans = []
    for subnet, (node, gateway) in expected.items():
        record = by_node.get(node)
        address = next((a for a in record.addresses if a.version == 4), None) if record else None
        if subnet.version != 4 or address is None:
            continue
        overlay = gateway != address  # a VTEP gateway: through the overlay
        size = o.state.mtu + (VXLAN_OVERHEAD[4] if overlay else 0)
        plans.append(
            PeerProbes(
                node=node,
                address=address,
                size=size,
                overlay=overlay,
                underlay=Probe(address),
                path_mtu=Probe(address, size, dont_fragment=True),
                vtep=Probe(subnet.network_address) if overlay else None,
                pods=Probe(next(subnet.hosts())),
            )
        )
    return plans


def probe_findings(
    o: Observation, plans: list[PeerProbes], answered: dict[Probe, bool]
) -> list[Finding]:
    """The failing hop toward each peer: this node -> the peer node (underlay), the path
    at full size (MTU), the overlay (VXLAN's UDP port), the peer node -> its pods."""
    down = [p for p in plans if not answered[p.underlay]]
    small = [p for p in plans if answered[p.underlay] and not answered[p.path_mtu]]
    blocked = [p for p in plans if p.vtep and answered[p.underlay] and not answered[p.vtep]]
    podless = [
        p for p in plans
        if answered[p.underlay] and (p.vtep is None or answered[p.vtep]) and not answered[p.pods]
    ]  # fmt: skip
    name = lambda p: f"{printable(p.node, 63)} ({p.address})"  # noqa: E731
    findings = []
    if down:
        findings.append(Finding("probe-nodes", FAIL, f"this node -> peer node: no answer from "
                                f"{_named([name(p) for p in down])}",
                                f"check the link and firewalls to {down[0].address} "
                                "(ping it), or whether the node is up"))  # fmt: skip
    else:
        findings.append(Finding("probe-nodes", OK, f"{len(plans)} peer nodes answer"))
    if small:
        p = small[0]
        pods = o.state.mtu if o.state else 0
        findings.append(Finding("path-mtu", FAIL, f"the path to {_named([name(q) for q in small])}"
                                f" does not carry {p.size}-byte packets (pod MTU {pods}"
                                f"{' + VXLAN' if p.overlay else ''}); larger packets are lost",
                                f"give every link between here and {p.node} an MTU of at least "
                                f"{p.size}, or run the pods with a smaller MTU"))  # fmt: skip
    else:
        findings.append(Finding("path-mtu", OK, "every peer path carries the pods' packets whole"))
    if blocked:
        p = blocked[0]
        shown = _named([name(q) for q in blocked])
        findings.append(Finding("vxlan-port", FAIL, f"VXLAN to {shown}"
                                " gets no answer while the node does: UDP "
                                f"{o.vxlan_port} is dropped between them",
                                f"let UDP {o.vxlan_port} between the nodes in, here and on "
                                f"{p.node} (a firewall rule drops it)"))  # fmt: skip
    elif any(p.overlay for p in plans):
        findings.append(Finding("vxlan-port", OK, "every overlay peer answers through VXLAN"))
    if podless:
        p = podless[0]
        shown = _named([name(q) for q in podless])
        findings.append(Finding("probe-pods", FAIL, f"peer node -> its pods: no answer from the "
                                f"pod gateway {p.pods.address} of {shown}",
                                f"run plainnet doctor on {p.node}"))  # fmt: skip
    else:
        findings.append(Finding("probe-pods", OK, "every peer's pod gateway answers"))
    return findings


def run_checks(o: Observation) -> list[Finding]:
    findings: list[Finding] = []
    for check in NODE_CHECKS:
        found = check(o)
        findings.extend(found if isinstance(found, list) else [found])
    return findings
