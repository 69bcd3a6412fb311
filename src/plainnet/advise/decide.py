"""The selection guide as a function: :class:`~plainnet.advise.facts.Facts` ->
:class:`Advice`. Pure; every row and its edges are in ``tests/unit/test_advise.py``.

| situation        | recommendation                                                     |
|------------------|--------------------------------------------------------------------|
| one-server       | no pod network component: the CNI plugin alone, no agent routes    |
| one-segment      | host-gw; podCIDRs from --allocate-node-cidrs or plainnet allocator |
| cloud-vpc        | cloud VPC routes while the route table has room, else auto         |
| routed           | auto (direct where on-link) or vxlan; BGP where routers can be run |
| strict-security  | any of the above + the NetworkPolicy add-on                        |

Two nodes share a segment when one's address lies in a network the other is on (and
no site tells them apart). Where the networks are unknown, the advice is ``auto`` —
right on any topology, and only as costly as an overlay where a peer is off-link —
and says which fact would make it host-gw.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import ip_network

from plainnet.advise.facts import DEFAULT_ROUTE_LIMITS, Facts, NodeFacts
from plainnet.ipam.types import IPNetwork

DEFAULT_CLUSTER_CIDR = ip_network("10.244.0.0/16")


@dataclass
class Advice:
    situation: str
    #: the backend the agents run (host-gw, vxlan, auto, cloud) or None (no agent routes)
    backend: str | None
    recommendation: str
    addons: list[str] = field(default_factory=list)
    #: the facts the answer rests on, in words
    facts: list[str] = field(default_factory=list)
    #: what to apply: commands and manifest snippets
    configuration: str = ""
    #: what would change the answer
    would_change: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def segments(nodes: tuple[NodeFacts, ...]) -> list[list[NodeFacts]] | None:
    """The nodes grouped by L2 segment, or None if some node's networks are unknown.
    A node is on a network that it lists or that holds one of its addresses; nodes at
    different sites never share one."""
    if any(not n.networks for n in nodes):
        return None
    parent = list(range(len(nodes)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    listed: dict[tuple[str | None, IPNetwork], list[int]] = {}
    for i, node in enumerate(nodes):
        for network in node.networks:
            listed.setdefault((node.site, network), []).append(i)
    # the networks that hold an address, found by its prefix at each length in use:
    # nodes x lengths lookups, not nodes x networks (5,000 nodes on 5,000 subnets)
    lengths = {(network.version, network.prefixlen) for _, network in listed}
    for i, node in enumerate(nodes):
        for address in node.addresses:
            for version, length in lengths:
                if version != address.version:
                    continue
                holder = ip_network((address, length), strict=False)
                for j in listed.get((node.site, holder), ()):
                    parent[root(j)] = root(i)
    groups: dict[int, list[NodeFacts]] = {}
    for i, node in enumerate(nodes):
        groups.setdefault(root(i), []).append(node)
    return list(groups.values())


def _networks_of(group: list[NodeFacts]) -> str:
    shown = sorted({str(n) for node in group for n in node.networks})
    return ", ".join(shown[:3]) + (f" and {len(shown) - 3} more" if len(shown) > 3 else "")


def decide(facts: Facts) -> Advice:
    nodes = facts.nodes
    count = len(nodes)
    cidr = facts.cluster_cidr or DEFAULT_CLUSTER_CIDR
    mask = _node_mask(cidr, count)
    said = [f"{count} node{'s' if count != 1 else ''} ({facts.source})" if facts.source else
            f"{count} node{'s' if count != 1 else ''}"]  # fmt: skip
    warnings = _cidr_warnings(facts, cidr, mask)
    groups = segments(nodes)
    if count == 1:
        advice = Advice(
            "one-server",
            None,
            "no pod network component: the CNI plugin alone gives pods addresses from the "
            "node's subnet; with one node there is no other node to route to",
            facts=[*said, "one node: every pod is on it"],
            configuration=_one_server_config(nodes[0], cidr, mask),
            would_change=[
                "a second node: then each node needs a route to the other's "
                "pod subnet (run plainnet advise again)"
            ],
        )
    elif facts.cloud is not None:
        advice = _cloud(facts, said, cidr, mask)
    elif groups is None and 0 < len(on_link := [n for n in nodes if n.networks]) < count:
        # seen from a node: some peers on its segment, the others behind routers (how
        # those group among themselves is not known: auto is right either way)
        seen = (
            f"{len(on_link)} nodes on this node's segment ({_networks_of(on_link)}), "
            f"{count - len(on_link)} behind routers"
        )
        advice = _routed(facts, [*said, seen, *facts.unknowns], True, cidr, mask)
    elif groups is None:
        advice = Advice(
            "unknown-segments",
            "auto",
            "auto: direct routes to peers on this node's networks, VXLAN to the others — "
            "right whatever the segments are",
            facts=[*said, *facts.unknowns],
            configuration=_config("auto", cidr, mask),
            would_change=[
                "all nodes on one L2 segment: host-gw (no overlay at all); give "
                "the nodes' networks in a description file to decide"
            ],
        )
    elif len(groups) == 1:
        advice = Advice(
            "one-segment",
            "host-gw",
            "host-gw: one plain route per peer via its node address; podCIDRs from "
            "kube-controller-manager --allocate-node-cidrs or plainnet allocator; agents "
            "read the Kubernetes datastore and write nothing",
            facts=[*said, f"all {count} nodes on one segment ({_networks_of(groups[0])})"],
            configuration=_config("host-gw", cidr, mask),
            would_change=[
                "a node on another subnet or site: its peers are not on-link, "
                "host-gw cannot reach it (then auto)"
            ],
        )
    else:
        shown = "; ".join(
            f"{len(g)} in {_networks_of(g)}" for g in sorted(groups, key=len, reverse=True)[:4]
        )
        shared = any(len(g) > 1 for g in groups)
        advice = _routed(facts, [*said, f"{len(groups)} segments: {shown}"], shared, cidr, mask)
    advice.warnings = warnings
    advice.facts.append(
        f"pod subnets: /{mask} from {cidr} ({2 ** (mask - cidr.prefixlen)} of them)"
    )
    if facts.security == "strict":
        advice.addons.append("network-policy")
        advice.facts.append("strict security: pods must be isolated by NetworkPolicies")
        advice.configuration += (
            "\n# strict security: the NetworkPolicy add-on (any backend)\n"
            "kubectl apply -f deploy/network-policy.yaml\n"
            "kubectl -n kube-system patch configmap plainnet-config --type merge "
            '-p \'{"data":{"networkPolicy":"true"}}\'\n'
        )
    else:
        advice.would_change.append("a need to isolate pods: add the NetworkPolicy add-on")
    return advice


def _cloud(facts: Facts, said: list[str], cidr: IPNetwork, mask: int) -> Advice:
    cloud = facts.cloud or "aws"
    limit = facts.route_table_limit or DEFAULT_ROUTE_LIMITS.get(cloud, 50)
    count = len(facts.nodes)
    said = [*said, f"every node is a {cloud} VM; the route table holds {limit} routes"]
    if count <= limit:
        return Advice(
            "cloud-vpc",
            "cloud",
            f"cloud VPC routes: plainnet cloud-routes writes one route per node's pod subnet "
            f"into the VPC route table ({count} of {limit}); no overlay, no peer routes",
            facts=[*said, f"{count} routes needed, {limit - count} to spare"],
            configuration=_config("cloud", cidr, mask)
            + "kubectl apply -f deploy/cloud/aws/   # the route controller, its RBAC and IAM\n",
            would_change=[
                f"node {limit + 1} exceeds the route table ({limit} routes): then "
                "auto, or raise the quota"
            ],
        )
    return Advice(
        "cloud-vpc",
        "auto",
        f"auto: {count} nodes need {count} routes, the route table holds {limit}; direct "
        "routes between nodes of one VPC subnet, VXLAN between subnets",
        facts=[*said, f"{count} routes needed: {count - limit} more than the table holds"],
        configuration=_config("auto", cidr, mask),
        would_change=[f"a route table quota of {count} or more: cloud VPC routes (no overlay)"],
    )


def _routed(facts: Facts, said: list[str], shared: bool, cidr: IPNetwork, mask: int) -> Advice:
    """Nodes on several segments; ``shared``: some two of them on one."""
    backend = "auto" if shared else "vxlan"
    why = (
        "auto: direct routes to peers on a node's own segment, VXLAN across routers"
        if shared
        else "vxlan: no two nodes share a segment, so every peer is reached through the overlay"
    )
    changes = []
    if facts.routers == "controlled":
        said.append("you control the routers between the segments")
        changes.append(
            "plainnet's BGP backend (not built yet): it would announce each node's pod "
            "subnet to your routers, no overlay at all"
        )
    else:
        said.append(
            "the routers between segments are not yours to configure"
            if facts.routers == "not-controlled"
            else "unknown whether you can configure the routers between segments"
        )
        changes.append("routers you can configure: BGP to them (once plainnet has it)")
    changes.append("all nodes moved onto one L2 segment: host-gw")
    return Advice("routed", backend, why, facts=said, configuration=_config(backend, cidr, mask),
                  would_change=changes)  # fmt: skip


def _node_mask(cidr: IPNetwork, count: int) -> int:
    """/24 (/64) node subnets where the cluster CIDR holds one for every node (a /24
    fits the kubelet's 110 pods), else the first longer prefix that does (up to /28)."""
    usual = 24 if cidr.version == 4 else 64
    mask = max(usual, cidr.prefixlen + 1)
    while 2 ** (mask - cidr.prefixlen) < count and mask < cidr.max_prefixlen - 4:
        mask += 1
    return mask


def _cidr_warnings(facts: Facts, cidr: IPNetwork, mask: int) -> list[str]:
    found = []
    for node in facts.nodes:
        for network in node.networks:
            if network.version == cidr.version and network.overlaps(cidr):
                found.append(
                    f"cluster CIDR {cidr} overlaps node network {network} ({node.name}): "
                    "choose a pod range no node network uses"
                )
                break
    service = facts.service_cidr
    if service is not None and service.version == cidr.version and service.overlaps(cidr):
        found.append(f"cluster CIDR {cidr} overlaps the service CIDR {service}")
    if 2 ** (mask - cidr.prefixlen) < len(facts.nodes):
        found.append(f"cluster CIDR {cidr} is too small for {len(facts.nodes)} node subnets")
    return found[:10]


def _config(backend: str, cidr: IPNetwork, mask: int) -> str:
    family = "IPv4" if cidr.version == 4 else "IPv6"
    return (
        "# Kubernetes datastore: deploy/config.yaml, then the agents\n"
        f'#   data: {{clusterCIDRs: "{cidr}", nodeMask{family}: "{mask}", backend: "{backend}"}}\n'
        "kubectl apply -f deploy/config.yaml -f deploy/rbac.yaml -f deploy/agent.yaml\n"
        "# or an etcd datastore shared with Flannel:\n"
        f"plainnet etcd init --etcd-endpoint http://ETCD:2379 --cluster-cidr {cidr} "
        f"--node-mask-{'ipv4' if cidr.version == 4 else 'ipv6'} {mask} --backend {backend}\n"
    )


def _one_server_config(node: NodeFacts, cidr: IPNetwork, mask: int) -> str:
    first = next(iter(node.pod_cidrs), None) or next(cidr.subnets(new_prefix=mask))
    gateway = next(first.hosts())
    return (
        f"# the reference CNI plugins alone (bridge + host-local), pods from {first}:\n"
        "# no agent, no datastore. /etc/cni/net.d/10-bridge.conflist:\n"
        '{"cniVersion": "1.0.0", "name": "pods", "plugins": [{"type": "bridge", '
        '"bridge": "cbr0", "isGateway": true, "ipMasq": true, "ipam": {"type": '
        f'"host-local", "ranges": [[{{"subnet": "{first}", "gateway": "{gateway}"}}]], '
        '"routes": [{"dst": "0.0.0.0/0"}]}}, {"type": "portmap", "capabilities": '
        '{"portMappings": true}}]}\n'
    )
