"""The compiled ruleset in a real kernel against the reference evaluator: random
policies over 3 namespaces x 3 pods, ports 80/81 (one named), TCP and UDP; every
probe's outcome must be the evaluator's verdict.

Nine pods on one lab node (the CNI plugin's bridge; bridged traffic meets the
forward hook through br_netfilter, as on a kubenet-style node), the ruleset applied in
the node's namespace with nft. The pods' Kubernetes identities (namespace, labels,
container ports) are given here: the compiler and the evaluator take plain values."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plainnet.lab import netns
from plainnet.lab.port_matrix import Endpoint, format_matrix, probe_matrix
from plainnet.namespaces import thread_in_namespace
from plainnet.policy import nft as policy_nft
from plainnet.policy.compiler import cleanup_script, compile_ruleset, update_script
from plainnet.policy.evaluator import allowed, endpoint
from plainnet.policy.model import Cluster, ContainerPort, Namespace, Pod, parse_policy

pytestmark = [pytest.mark.root]

NAMESPACES = ("x", "y", "z")
#: the table applied last, by lab cluster: each example changes it by the difference
APPLIED: dict = {}
PODS = ("a", "b", "c")
#: named ports: "serve" is 80 on a, 81 on b, absent on c
NAMED = {"a": (ContainerPort("serve", 80, "TCP"), ContainerPort("serve", 80, "UDP")),
         "b": (ContainerPort("serve", 81, "TCP"), ContainerPort("serve", 81, "UDP")),
         "c": ()}  # fmt: skip


@pytest.fixture
def node_with_nine_pods(cluster_factory, lab_name):
    cluster = cluster_factory(lab_name, nodes=1, pods_per_node=9, cluster_cidrs=["10.244.0.0/16"])
    pods = []
    for lab_pod, (namespace, name) in zip(
        cluster.pods, [(n, p) for n in NAMESPACES for p in PODS], strict=True
    ):
        pods.append(
            (
                Pod(
                    namespace,
                    name,
                    {"pod": name, "app": "web" if name != "c" else "db"},
                    lab_pod.addresses,
                    "node1",
                    NAMED[name],
                ),
                Endpoint(f"{namespace}/{name}", lab_pod.namespace, lab_pod.addresses[0]),
            )
        )
    yield cluster, pods
    APPLIED.pop(id(cluster), None)
    with thread_in_namespace(netns.path_of(cluster.lab.host("node1").namespace)):
        policy_nft.remove()


selectors = st.one_of(
    st.just({}),
    st.sampled_from(PODS).map(lambda p: {"matchLabels": {"pod": p}}),
    st.sampled_from(["web", "db"]).map(lambda a: {"matchLabels": {"app": a}}),
    st.lists(st.sampled_from(PODS), min_size=1, max_size=2, unique=True).map(
        lambda v: {"matchExpressions": [{"key": "pod", "operator": "NotIn", "values": v}]}
    ),
)
namespace_selectors = st.one_of(
    st.just({}),
    st.sampled_from(NAMESPACES).map(lambda n: {"matchLabels": {"ns": n}}),
    st.lists(st.sampled_from(NAMESPACES), min_size=1, max_size=2, unique=True).map(
        lambda v: {"matchExpressions": [{"key": "ns", "operator": "In", "values": v}]}
    ),
)


def ip_blocks(addresses):
    single = st.sampled_from(addresses).map(lambda a: {"ipBlock": {"cidr": f"{a}/32"}})
    excepting = st.sampled_from(addresses).map(
        lambda a: {"ipBlock": {"cidr": "10.244.0.0/16", "except": [f"{a}/32"]}}
    )
    return st.one_of(single, excepting)


def peers(addresses):
    return st.one_of(
        selectors.map(lambda s: {"podSelector": s}),
        namespace_selectors.map(lambda s: {"namespaceSelector": s}),
        st.tuples(selectors, namespace_selectors).map(
            lambda t: {"podSelector": t[0], "namespaceSelector": t[1]}
        ),
        ip_blocks(addresses),
    )


ports = st.one_of(
    st.builds(
        lambda protocol, port: {"protocol": protocol, "port": port},
        st.sampled_from(["TCP", "UDP"]),
        st.sampled_from([80, 81, "serve"]),
    ),
    st.sampled_from(["TCP", "UDP"]).map(lambda p: {"protocol": p}),
    st.just({"port": 80, "endPort": 81}),
)


def rules(addresses, peer_field):
    return st.builds(
        lambda p, q: {**({peer_field: p} if p else {}), **({"ports": q} if q else {})},
        st.lists(peers(addresses), max_size=2),
        st.lists(ports, max_size=2),
    )


def policies(addresses):
    return st.builds(
        lambda namespace, selector, types, ingress, egress: {
            "metadata": {"namespace": namespace, "name": "p"},
            "spec": {
                "podSelector": selector,
                **({"policyTypes": types} if types else {}),
                **({"ingress": ingress} if ingress is not None else {}),
                **({"egress": egress} if egress is not None else {}),
            },
        },
        st.sampled_from(NAMESPACES),
        selectors,
        st.one_of(st.none(), st.sampled_from([["Ingress"], ["Egress"], ["Ingress", "Egress"]])),
        st.one_of(st.none(), st.lists(rules(addresses, "from"), max_size=2)),
        st.one_of(st.none(), st.lists(rules(addresses, "to"), max_size=2)),
    )


def check(cluster_and_pods, documents):
    lab_cluster, pods = cluster_and_pods
    problems: list = []
    parsed = [p for d in documents if (p := parse_policy(d, problems)) is not None]
    cluster = Cluster(
        parsed,
        [pod for pod, _ in pods],
        {n: Namespace(n, {"ns": n}) for n in NAMESPACES},
    )
    ruleset = compile_ruleset(cluster, "node1")
    with thread_in_namespace(netns.path_of(lab_cluster.lab.host("node1").namespace)):
        # from the last example's table by the difference alone, as the agent does
        previous = APPLIED.get(id(lab_cluster))
        if previous is None:
            policy_nft.apply(ruleset)
        else:
            policy_nft.run(update_script(previous, ruleset), whole=False)
            cleanup = cleanup_script(previous, ruleset)
            if cleanup:
                policy_nft.run(cleanup, whole=False)
    APPLIED[id(lab_cluster)] = ruleset
    observed = probe_matrix([e for _, e in pods])
    expected = {
        probe: allowed(
            cluster,
            endpoint(cluster, by_name[probe[0]]),
            endpoint(cluster, by_name[probe[1]]),
            probe[2],
            probe[3],
        )
        for by_name in [{e.name: e.address for _, e in pods}]
        for probe in observed
    }
    names = [e.name for _, e in pods]
    assert observed == expected, (
        f"{documents}\n{format_matrix(names, expected, observed)}\n{ruleset.text}"
    )


def test_random_policies_enforce_what_the_evaluator_says(node_with_nine_pods):
    addresses = [str(e.address) for _, e in node_with_nine_pods[1]]

    @settings(
        max_examples=15,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
    )
    @given(st.lists(policies(addresses), min_size=1, max_size=3))
    def run(documents):
        check(node_with_nine_pods, documents)

    run()


def test_no_policy_allows_everything_and_deny_all_denies_all(node_with_nine_pods):
    check(node_with_nine_pods, [])
    deny_all = [
        {"metadata": {"namespace": n, "name": "deny"},
         "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}
        for n in NAMESPACES
    ]  # fmt: skip
    check(node_with_nine_pods, deny_all)
