"""NetworkPolicy truth tables, in the style of the upstream e2e network-policy tests and
cyclonus: namespaces x, y, z with pods a, b, c spread over three lab nodes (each
namespace has pods on several nodes), ports 80/81, TCP and UDP. The pods and
namespaces are real objects in the lab's kube-apiserver, the policies are created
there, and every node's agent (``--network-policy``) enforces them; each case's
expected matrix is the reference evaluator's over the objects read back from the API
server, and the observed one is probed. Each case prints both."""

from __future__ import annotations

import socket
import time

import pytest

from plainnet.lab import kubelet, netns
from plainnet.lab.port_matrix import Endpoint, format_matrix, probe_matrix
from plainnet.policy.evaluator import allowed, endpoint
from plainnet.policy.model import parse_cluster
from tests.helpers.cluster_checks import metric

pytestmark = [pytest.mark.root, pytest.mark.kube]

NAMESPACES = ("x", "y", "z")
PODS = ("a", "b", "c")
#: the named ports "serve" (TCP) and "serve-udp"; c has none
SERVE = {"a": 80, "b": 81}


def policy(namespace, name, selector=None, types=None, ingress=None, egress=None):
    spec = {"podSelector": selector or {}}
    if types:
        spec["policyTypes"] = types
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"namespace": namespace, "name": name},
        "spec": spec,
    }


def pod(name):
    return {"matchLabels": {"pod": name}}


def ns(name):
    return {"matchLabels": {"ns": name}}


class Lab:
    def __init__(self, cluster):
        self.cluster = cluster
        self.kube = cluster.kube
        self.pods = {}
        for index, (namespace, name) in enumerate((n, p) for n in NAMESPACES for p in PODS):
            node = cluster.nodes[index % len(cluster.nodes)]
            named = (("serve", "TCP"), ("serve-udp", "UDP")) if name in SERVE else ()
            ports = [(port_name, SERVE[name], proto) for port_name, proto in named]
            created = cluster.add_pod(
                node, f"{namespace}{name}", kube_namespace=namespace, labels={"pod": name},
                ports=ports,
            )  # fmt: skip
            self.pods[f"{namespace}/{name}"] = created
        self.endpoints = [
            Endpoint(key, p.namespace, p.addresses[0]) for key, p in self.pods.items()
        ]

    def items(self, path):
        status, listing = self.kube.request("GET", path)
        assert status == 200, listing
        return listing["items"]

    def expected(self, probes):
        cluster, _problems = parse_cluster(
            self.items("/apis/networking.k8s.io/v1/networkpolicies"),
            self.items("/api/v1/pods"),
            self.items("/api/v1/namespaces"),
        )
        by_name = {e.name: e.address for e in self.endpoints}
        return {
            p: allowed(
                cluster, endpoint(cluster, by_name[p[0]]), endpoint(cluster, by_name[p[1]]),
                p[2], p[3],
            )
            for p in probes
        }  # fmt: skip

    def create(self, document):
        namespace = document["metadata"]["namespace"]
        status, reply = self.kube.request(
            "POST", f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies", document
        )
        assert status == 201, reply

    def delete_all(self):
        for item in self.items("/apis/networking.k8s.io/v1/networkpolicies"):
            metadata = item["metadata"]
            self.kube.request(
                "DELETE",
                f"/apis/networking.k8s.io/v1/namespaces/{metadata['namespace']}"
                f"/networkpolicies/{metadata['name']}",
            )

    def applies(self):
        return [
            metric(self.cluster, n, "plainnet_policy_applies_total") for n in self.cluster.nodes
        ]

    def converge(self, name, before, timeout=20.0):
        """Wait until every agent applied since ``before``, then until the observed
        matrix is the expected one (and stays so); print both."""
        deadline = time.monotonic() + timeout
        while before and any(a <= b for a, b in zip(self.applies(), before, strict=True)):
            assert time.monotonic() < deadline, f"{name}: the agents did not apply"
            time.sleep(0.1)
        names = list(self.pods)
        observed = probe_matrix(self.endpoints)
        expected = self.expected(observed)
        while observed != expected and time.monotonic() < deadline:
            observed = probe_matrix(self.endpoints)
        table = format_matrix(names, expected, observed)
        print(f"\n== {name}\n{table}")
        assert observed == expected, f"{name}\n{table}"


@pytest.fixture(scope="module")
def lab(request, tmp_path_factory):
    # one cluster for every case: building it (API server, three agents, nine pods)
    # costs more than all the cases together
    from plainnet.lab.cluster import ClusterSpec, LabCluster
    from plainnet.testing.pytest_plugin import _run_prefix

    cluster = LabCluster(
        ClusterSpec(
            name=f"{_run_prefix()}pt",
            nodes=3,
            pods_per_node=0,
            cluster_cidrs=["10.244.0.0/16"],
            datastore="kubernetes",
            network_policy=True,
            resync_seconds=5,  # a hand-edited table is back within one
        )
    )
    cluster.up(timeout=120)
    try:
        yield Lab(cluster)
    finally:
        cluster.down()


def relabel_pod(lab, key, labels):
    namespace, _name = key.split("/")
    created = lab.pods[key]
    kubelet.set_labels(lab.kube, f"/api/v1/namespaces/{namespace}/pods/{created.name}", labels)


def relabel_namespace(lab, name, labels):
    kubelet.set_labels(lab.kube, f"/api/v1/namespaces/{name}", labels)


CASES = {
    "no policy: everything allowed": [],
    "deny all ingress in x": [policy("x", "deny", types=["Ingress"])],
    "deny all egress in x": [policy("x", "deny", types=["Egress"])],
    "deny all, every namespace": [
        policy(n, "deny", types=["Ingress", "Egress"]) for n in NAMESPACES
    ],
    "allow all ingress in x": [policy("x", "allow", ingress=[{}])],
    "ingress to x from its own namespace": [
        policy("x", "same", ingress=[{"from": [{"podSelector": {}}]}])
    ],
    "ingress to x/a from namespace y by label": [
        policy("x", "from-y", pod("a"), ingress=[{"from": [{"namespaceSelector": ns("y")}]}])
    ],
    "pod and namespace selector together (y/b only)": [
        policy(
            "x",
            "and",
            ingress=[{"from": [{"namespaceSelector": ns("y"), "podSelector": pod("b")}]}],
        )
    ],
    "pod and namespace selector separately (y/*, x/b)": [
        policy(
            "x",
            "or",
            ingress=[{"from": [{"namespaceSelector": ns("y")}, {"podSelector": pod("b")}]}],
        )
    ],
    "all namespaces (namespaceSelector {})": [
        policy("y", "all-ns", ingress=[{"from": [{"namespaceSelector": {}}]}])
    ],
    "ingress on port 80/TCP only": [policy("z", "tcp80", ingress=[{"ports": [{"port": 80}]}])],
    "ingress on port 81/UDP only": [
        policy("z", "udp81", ingress=[{"ports": [{"protocol": "UDP", "port": 81}]}])
    ],
    "ingress on every UDP port": [policy("z", "udp", ingress=[{"ports": [{"protocol": "UDP"}]}])],
    "ingress to the named port serve": [
        policy("x", "named", ingress=[{"ports": [{"port": "serve"}]}])
    ],
    "egress to the named port serve": [
        policy(
            "y",
            "named-egress",
            types=["Egress"],
            egress=[{"ports": [{"port": "serve-udp", "protocol": "UDP"}]}],
        )
    ],
    "endPort range 80-81 (as the API server stores it)": [
        policy("x", "range", ingress=[{"ports": [{"port": 80, "endPort": 81}]}])
    ],
    "egress only to pods a": [
        policy(
            "x",
            "to-a",
            types=["Egress"],
            egress=[{"to": [{"namespaceSelector": {}, "podSelector": pod("a")}]}],
        )
    ],
    "egress only to namespace y": [
        policy("z", "to-y", types=["Egress"], egress=[{"to": [{"namespaceSelector": ns("y")}]}])
    ],
    "multiple policies are unioned": [
        policy(
            "y",
            "from-xa",
            ingress=[{"from": [{"namespaceSelector": ns("x"), "podSelector": pod("a")}]}],
        ),
        policy(
            "y",
            "from-zc",
            ingress=[{"from": [{"namespaceSelector": ns("z"), "podSelector": pod("c")}]}],
        ),
    ],
    "matchExpressions NotIn selects the others": [
        policy(
            "x",
            "not-a",
            {"matchExpressions": [{"key": "pod", "operator": "NotIn", "values": ["a"]}]},
            types=["Ingress"],
        )
    ],
    "Egress-only policy: its ingress rules do not count": [
        policy("y", "egress-only", types=["Egress"], ingress=[{}], egress=[])
    ],
    "ingress and egress in one policy": [
        policy(
            "z",
            "both",
            pod("c"),
            ingress=[{"from": [{"podSelector": {}}]}],
            egress=[{"to": [{"podSelector": {}}], "ports": [{"port": 81}]}],
        )
    ],
    "deny all ingress everywhere, egress policies cannot open it": [
        *(policy(n, "deny-in", types=["Ingress"]) for n in NAMESPACES),
        policy("x", "egress-all", types=["Egress"], egress=[{}]),
    ],
    "a policy selecting no pod changes nothing": [
        policy("x", "nobody", pod("nobody"), types=["Ingress", "Egress"])
    ],
    "a named port no pod has allows nothing (the API lets it through)": [
        policy("y", "no-such-port", ingress=[{"ports": [{"port": "no-such-port"}]}])
    ],
    "ingress from a rule with a peer and a port": [
        policy(
            "y",
            "peer-port",
            ingress=[
                {
                    "from": [{"namespaceSelector": ns("x")}],
                    "ports": [{"port": 81, "protocol": "UDP"}],
                }
            ],
        )
    ],
}


@pytest.fixture
def clean(lab):
    lab.delete_all()
    before = lab.applies()
    yield before
    lab.delete_all()


@pytest.mark.parametrize("case", list(CASES))
def test_case(lab, clean, case):
    for document in CASES[case]:
        lab.create(document)
    lab.converge(case, clean if CASES[case] else None)  # no policy: nothing to apply


def test_ip_blocks_with_except(lab, clean):
    """An ipBlock around the cluster CIDR with one pod taken out, and one of a single
    pod (pods' addresses are known only once the lab is up)."""
    xa, yb = lab.pods["x/a"].addresses[0], lab.pods["y/b"].addresses[0]
    lab.create(policy("z", "block", ingress=[{"from": [
        {"ipBlock": {"cidr": "10.244.0.0/16", "except": [f"{xa}/32"]}}]}]))  # fmt: skip
    lab.create(policy("y", "single", ingress=[{"from": [{"ipBlock": {"cidr": f"{yb}/32"}}]}]))
    lab.converge("ipBlock with except; ipBlock of one pod", clean)


def test_egress_to_the_cluster_dns_address(lab, clean):
    """Deny all egress from x except UDP 81 to z/b — the way a policy lets pods reach the
    cluster DNS service's address and nothing else."""
    zb = lab.pods["z/b"].addresses[0]
    lab.create(policy("x", "dns-only", types=["Egress"], egress=[{
        "to": [{"ipBlock": {"cidr": f"{zb}/32"}}],
        "ports": [{"protocol": "UDP", "port": 81}]}]))  # fmt: skip
    lab.converge("egress only to the DNS address", clean)


def test_a_pod_relabelled_and_a_namespace_relabelled(lab, clean):
    lab.create(policy("x", "from-a", ingress=[{"from": [
        {"namespaceSelector": ns("y"), "podSelector": pod("a")}]}]))  # fmt: skip
    lab.converge("policy: x from y/a", clean)
    before = lab.applies()
    relabel_pod(lab, "y/b", {"pod": "a"})
    try:
        lab.converge("y/b relabelled pod=a", before)
    finally:
        relabel_pod(lab, "y/b", {"pod": "b"})
    before = lab.applies()
    relabel_namespace(lab, "z", {"ns": "y"})
    try:
        lab.converge("namespace z relabelled ns=y", before)
    finally:
        relabel_namespace(lab, "z", {"ns": "z"})


def test_policies_added_and_removed_while_traffic_flows(lab, clean):
    lab.create(policy("x", "deny", types=["Ingress", "Egress"]))
    lab.converge("deny in x added", clean)
    before = lab.applies()
    lab.delete_all()
    lab.converge("deny in x removed: all open again", before)


def nft_table(lab, node):
    return lab.cluster.lab.run(
        node, ["nft", "list", "table", "inet", "plainnet-policy"], capture_output=True, text=True
    )


def test_a_hand_deleted_table_comes_back_and_a_killed_agent_keeps_enforcing(lab, clean):
    lab.create(policy("x", "deny", types=["Ingress"]))
    lab.converge("deny ingress in x", clean)
    node = lab.pods["x/a"].node
    # the probes' drops are counted by pod and direction (read at each resync)
    deadline = time.monotonic() + 15
    while metric(lab.cluster, node, "plainnet_policy_dropped_packets_total") <= 0:
        assert time.monotonic() < deadline, "no dropped packet counted"
        time.sleep(0.5)
    # by hand: the table deleted -> the next resync applies it again
    lab.cluster.lab.run(node, ["nft", "delete", "table", "inet", "plainnet-policy"], check=True)
    deadline = time.monotonic() + 15
    while nft_table(lab, node).returncode != 0:
        assert time.monotonic() < deadline, "the table did not come back"
        time.sleep(0.2)
    lab.converge("after the table was deleted by hand", None)
    # the agent killed: the last table keeps enforcing (fail-closed), and a policy
    # removed meanwhile is seen by the restarted agent
    lab.cluster.stop_agent(node, kill=True)
    lab.converge("agent killed: x stays denied on its node", None)
    assert nft_table(lab, node).returncode == 0
    lab.delete_all()
    lab.cluster.start_agent(node)
    deadline = time.monotonic() + 30
    while " drop" in nft_table(lab, node).stdout:  # no pod isolated any more
        assert time.monotonic() < deadline, "the restarted agent kept the old table"
        time.sleep(0.2)
    lab.converge("agent restarted after the policy went: all open", None)


def test_an_established_connection_survives_a_policy_that_now_denies_it(lab, clean):
    """Documented behaviour: conntrack lets the packets of a connection established
    before the policy through until it ends; new connections are denied at once."""
    source, target = lab.pods["y/a"], lab.pods["x/a"]
    listener = netns.socket_in(target.namespace)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((str(target.addresses[0]), 82))  # 80 and 81 are the probes'
    listener.listen(4)
    client = netns.socket_in(source.namespace)
    client.settimeout(3)
    try:
        client.connect((str(target.addresses[0]), 82))
        server, _ = listener.accept()
        server.settimeout(3)
        lab.create(policy("x", "deny", types=["Ingress"]))
        lab.converge("deny ingress in x (while a connection is open)", clean)
        client.sendall(b"still here")
        assert server.recv(64) == b"still here"
        server.sendall(b"and back")
        assert client.recv(64) == b"and back"
        server.close()
        fresh = netns.socket_in(source.namespace)
        fresh.settimeout(1)
        with pytest.raises(OSError):  # a new connection: denied
            fresh.connect((str(target.addresses[0]), 82))
        fresh.close()
    finally:
        client.close()
        listener.close()


def test_what_the_api_server_refuses_never_reaches_the_agents(lab, clean):
    """An ipBlock that is not a CIDR, a port out of range: refused by the API server's
    validation (v1.20), so the agents' own refusal of such pieces (tests/unit/
    test_policy.py) is the second line. What it lets through — a named port no pod
    has — allows nothing (the case above)."""
    for spec in (
        {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "not-a-cidr"}}]}]},
        {"podSelector": {}, "ingress": [{"ports": [{"port": 70000}]}]},
    ):
        document = policy("x", "bad")
        document["spec"] = spec
        status, _ = lab.kube.request(
            "POST", "/apis/networking.k8s.io/v1/namespaces/x/networkpolicies", document
        )
        assert status == 422
