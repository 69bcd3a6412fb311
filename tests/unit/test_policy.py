"""NetworkPolicy parsing, the reference evaluator's reading of the API documentation,
and the compiler's ruleset — pure, no kernel (the kernel: tests/policy/)."""

import time
from ipaddress import ip_address

from hypothesis import given, settings
from hypothesis import strategies as st

from plainnet.policy.compiler import cleanup_script, compile_ruleset, update_script
from plainnet.policy.evaluator import Endpoint, allowed, endpoint
from plainnet.policy.model import (
    EGRESS,
    INGRESS,
    Cluster,
    ContainerPort,
    Namespace,
    Pod,
    parse_cluster,
    parse_policy,
)


def policy(namespace="x", spec=None, name="p"):
    return {"metadata": {"namespace": namespace, "name": name}, "spec": spec or {}}


def pods():
    return [
        Pod("x", "a", {"pod": "a"}, (ip_address("10.244.1.2"),), "n1",
            (ContainerPort("http", 8080),)),
        Pod("x", "b", {"pod": "b"}, (ip_address("10.244.2.2"),), "n2"),
        Pod("y", "a", {"pod": "a"}, (ip_address("10.244.2.3"),), "n2"),
    ]  # fmt: skip


def cluster(*documents):
    problems = []
    parsed = [p for d in documents if (p := parse_policy(d, problems)) is not None]
    namespaces = {n: Namespace(n, {"ns": n}) for n in ("x", "y")}
    return Cluster(parsed, pods(), namespaces), problems


def verdict(c, source, destination, port=80, protocol="TCP"):
    return allowed(
        c, endpoint(c, ip_address(source)), endpoint(c, ip_address(destination)), protocol, port
    )


XA, XB, YA, OUTSIDE = "10.244.1.2", "10.244.2.2", "10.244.2.3", "192.0.2.1"


def test_policy_types_default_as_the_api_defines():
    problems = []
    ingress_only = parse_policy(policy(spec={"podSelector": {}}), problems)
    with_egress = parse_policy(policy(spec={"egress": [{}]}), problems)
    declared = parse_policy(policy(spec={"policyTypes": ["Egress"], "ingress": [{}]}), problems)
    assert ingress_only.types == {INGRESS}
    assert with_egress.types == {INGRESS, EGRESS}
    assert declared.types == {EGRESS}
    assert problems == []


def test_an_unselected_pod_allows_everything_and_a_selected_one_only_its_rules():
    c, _ = cluster(policy(spec={"podSelector": {"matchLabels": {"pod": "a"}}}))
    assert not verdict(c, XB, XA)  # x/a isolated for ingress, no rule
    assert verdict(c, XA, XB)  # x/b not selected; x/a not isolated for egress
    assert verdict(c, OUTSIDE, YA)  # another namespace's pod


def test_peers_pod_namespace_together_and_separately():
    together = {
        "ingress": [
            {
                "from": [
                    {
                        "podSelector": {"matchLabels": {"pod": "a"}},
                        "namespaceSelector": {"matchLabels": {"ns": "y"}},
                    }
                ]
            }
        ]
    }
    b_pods, y_namespace = {"matchLabels": {"pod": "b"}}, {"matchLabels": {"ns": "y"}}
    apart = {"ingress": [{"from": [{"podSelector": b_pods}, {"namespaceSelector": y_namespace}]}]}
    c, _ = cluster(policy(spec={"podSelector": {"matchLabels": {"pod": "a"}}, **together}))
    assert verdict(c, YA, XA) and not verdict(c, XB, XA)
    c, _ = cluster(policy(spec={"podSelector": {"matchLabels": {"pod": "a"}}, **apart}))
    assert verdict(c, YA, XA) and verdict(c, XB, XA) and not verdict(c, OUTSIDE, XA)


def test_ip_block_except_and_named_and_ranged_ports():
    spec = {
        "ingress": [
            {
                "from": [{"ipBlock": {"cidr": "10.244.0.0/16", "except": ["10.244.2.3/32"]}}],
                "ports": [{"port": "http"}, {"port": 80, "endPort": 90, "protocol": "UDP"}],
            }
        ]
    }
    c, _ = cluster(policy(spec=spec))
    assert verdict(c, XB, XA, 8080)  # the named port of the destination pod
    assert not verdict(c, XB, XA, 8081)
    assert verdict(c, XB, XA, 85, "UDP") and not verdict(c, XB, XA, 85, "TCP")
    assert not verdict(c, YA, XA, 8080)  # the except
    assert not verdict(c, XA, XB, 8080)  # x/b has no port named http


def test_broken_pieces_allow_nothing_but_keep_the_pods_isolated():
    spec = {
        "podSelector": {},
        "ingress": [
            {"from": [{"ipBlock": {"cidr": "not-a-cidr"}}]},
            {"ports": [{"port": "this-name-is-far-too-long"}]},
            {"ports": [{"protocol": "ICMP"}]},
            "not a rule",
        ],
    }
    c, problems = cluster(policy(spec=spec))
    assert len(problems) == 4
    assert not verdict(c, XB, XA) and not verdict(c, OUTSIDE, XB)  # still isolated
    assert not verdict(c, XB, XA, 8080)
    bad_selector = policy(
        spec={"podSelector": {"matchExpressions": [{"key": "k", "operator": "Near"}]}},
        name="q",
    )
    c, problems = cluster(bad_selector)
    assert c.policies == [] and "podSelector" in problems[0].reason


def test_hostile_strings_reach_the_log_escaped_and_capped():
    document = policy("x\nforged", {"ingress": [{"from": [{"ipBlock": {"cidr": "x" * 10000}}]}]})
    problems = []
    parse_policy(document, problems)
    line = str(problems[0])
    assert "\n" not in line and len(line) < 1200


def test_parsing_api_objects_skips_what_is_no_pod():
    documents = [
        {"metadata": {"namespace": "x", "name": "ok"}, "spec": {"nodeName": "n1"},
         "status": {"podIPs": [{"ip": "10.244.1.9"}, {"ip": "garbage"}]}},
        {"metadata": {"namespace": "x", "name": "hostnet"}, "spec": {"hostNetwork": True},
         "status": {"podIP": "10.250.0.2"}},
        {"metadata": "nonsense"},
    ]  # fmt: skip
    c, problems = parse_cluster([], documents, [{"metadata": {"name": "x", "labels": {"a": 1}}}])
    assert [p.name for p in c.pods] == ["ok", "hostnet"]
    assert c.pods[0].addresses == (ip_address("10.244.1.9"),)
    assert ip_address("10.250.0.2") not in c.by_address  # host network: not a pod address
    assert len(problems) == 2  # the pod without metadata, the namespace with a number label


def test_the_compiled_table_names_only_this_nodes_pods():
    c, _ = cluster(policy(spec={"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}))
    ruleset = compile_ruleset(c, "n2")
    assert ruleset.selected_pods == 1  # x/b; x/a is on n1, y/a is not selected
    assert f"{XB} : jump in-" in ruleset.text and XA not in ruleset.text.split("chain forward")[0]
    assert "table inet plainnet-policy" in ruleset.text
    assert "table inet plainnet " not in ruleset.text  # never the masquerade table


def test_a_policy_that_isolates_a_pod_rewrites_its_chain_and_nothing_else():
    """The cheap path: map elements (and deletions) make nft read the whole table first;
    a policy change over running pods needs neither, its leftovers go in a cleanup."""
    open_table = compile_ruleset(cluster()[0], "n2")
    assert open_table.selected_pods == 0 and f"{XB} : jump in-" in open_table.text
    from_a = {"from": [{"podSelector": {"matchLabels": {"pod": "a"}}}]}
    allow_a = policy(spec={"podSelector": {"matchLabels": {"pod": "b"}}, "ingress": [from_a]})
    isolated = compile_ruleset(cluster(allow_a)[0], "n2")
    change = update_script(open_table, isolated)
    assert isolated.selected_pods == 1 and "add set" in change and "drop" in change
    assert " element " not in change and "delete" not in change
    assert cleanup_script(open_table, isolated) == ""
    back = update_script(isolated, open_table)
    assert " element " not in back and "delete" not in back and "flush chain" in back
    assert cleanup_script(isolated, open_table).startswith("delete set inet plainnet-policy p4-")


def test_ten_thousand_pods_on_one_selector_compile_into_one_set():
    many = [
        Pod("x", f"p{i}", {"app": "web"}, (ip_address(f"10.244.{i // 250}.{2 + i % 250}"),),
            "n1" if i < 50 else f"n{i % 40 + 2}")
        for i in range(10_000)
    ]  # fmt: skip
    problems = []
    allow_web = parse_policy(
        policy(spec={"podSelector": {"matchLabels": {"app": "web"}},
                     "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]}),
        problems,
    )  # fmt: skip
    c = Cluster([allow_web], many, {"x": Namespace("x")})
    started = time.perf_counter()
    ruleset = compile_ruleset(c, "n1")
    elapsed = time.perf_counter() - started
    assert ruleset.selected_pods == 50 and ruleset.text.count("set p4-") == 1
    assert elapsed < 2, elapsed  # ~0.1 s here
    assert verdict(c, "10.244.39.251", "10.244.0.2")
    assert not allowed(
        c, Endpoint(ip_address(OUTSIDE)), endpoint(c, ip_address("10.244.0.2")), "TCP", 80
    )


def test_a_compile_that_takes_over_the_last_ones_peer_work_gives_the_same_table():
    first, _ = cluster(policy(spec={"ingress": [{"from": [{"podSelector": {}}]}]}))
    earlier = compile_ruleset(first, "n1")
    spec = {
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}],
        "egress": [{"to": [{"podSelector": {}}], "ports": [{"port": "http"}]}],
    }
    second, _ = cluster(policy(spec={"ingress": [{"from": [{"podSelector": {}}]}]}),
                        policy(spec=spec, name="q"))  # fmt: skip
    fresh = compile_ruleset(second, "n1")
    reused = compile_ruleset(second, "n1", reuse=earlier)
    assert (reused.chains, reused.sets, reused.maps) == (fresh.chains, fresh.sets, fresh.maps)


def _selector(choice):
    return [{}, {"matchLabels": {"pod": "a"}}, {"matchLabels": {"pod": "b"}}][choice]


@st.composite
def _policies(draw):
    documents = []
    for index in range(draw(st.integers(0, 4))):
        peers = [
            [{"podSelector": _selector(draw(st.integers(0, 2)))}],
            [{"namespaceSelector": {"matchLabels": {"ns": draw(st.sampled_from("xy"))}}}],
            [{"ipBlock": {"cidr": "10.244.0.0/16", "except": ["10.244.2.0/24"]}}],
            [],
        ][draw(st.integers(0, 3))]
        ports = draw(st.sampled_from([[], [{"port": 80}], [{"port": "http"}]]))
        rule = {"from": peers, "ports": ports}
        spec = {"podSelector": _selector(draw(st.integers(0, 2))), "ingress": [rule]}
        if draw(st.booleans()):
            spec["egress"] = [{"to": peers, "ports": ports}]
        documents.append(policy(draw(st.sampled_from("xy")), spec, name=f"p{index}"))
    return documents


@settings(max_examples=200, deadline=None)
@given(_policies(), _policies(), _policies())
def test_compiles_that_take_over_earlier_work_equal_fresh_ones(first, second, third):
    """Any sequence of policy changes over the same pods: each compile that takes over
    the last one's work gives the table a fresh compile gives."""
    earlier = None
    for documents in (first, second, third):
        c, _ = cluster(*documents)
        fresh = compile_ruleset(c, "n2")
        reused = compile_ruleset(c, "n2", reuse=earlier)
        assert (reused.chains, reused.sets, reused.maps) == (fresh.chains, fresh.sets, fresh.maps)
        earlier = reused
