"""The add-on on top of another routing backend: policies enforced across nodes on a
vxlan cluster (the packets arrive decapsulated from the VXLAN device), and the
masquerade table still translating pod traffic that leaves the cluster CIDR."""

from __future__ import annotations

import socket
import time

import pytest

from plainnet.lab import netns
from plainnet.lab.port_matrix import Endpoint, probe_matrix

pytestmark = [pytest.mark.root, pytest.mark.kube]


def policy(namespace, name, spec):
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"namespace": namespace, "name": name},
        "spec": spec,
    }


def test_policies_on_a_vxlan_cluster_and_masquerade_beside_them(cluster_factory, lab_name):
    cluster = cluster_factory(
        lab_name,
        nodes=2,
        pods_per_node=0,
        datastore="kubernetes",
        backend="vxlan",
        network_policy=True,
        cluster_cidrs=["10.244.0.0/16"],
    )
    xa = cluster.add_pod("node1", "xa", kube_namespace="x", labels={"pod": "a"})
    xb = cluster.add_pod("node2", "xb", kube_namespace="x", labels={"pod": "b"})
    ya = cluster.add_pod("node2", "ya", kube_namespace="y", labels={"pod": "a"})
    node_network = str(cluster.lab.host("node1").interfaces[0].ipv4.network)
    spec = {
        "podSelector": {},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [{"podSelector": {}}]}],
        "egress": [{"to": [{"podSelector": {}}, {"ipBlock": {"cidr": node_network}}]}],
    }
    status, reply = cluster.kube.request(
        "POST", "/apis/networking.k8s.io/v1/namespaces/x/networkpolicies", policy("x", "own", spec)
    )
    assert status == 201, reply
    pods = [Endpoint(p.name, p.namespace, p.addresses[0]) for p in (xa, xb, ya)]
    expected = {
        (s.name, d.name, proto, port): (s.name, d.name) in {("node1-xa", "node2-xb"),
                                                           ("node2-xb", "node1-xa")}
        for s in pods for d in pods if s is not d for proto in ("TCP", "UDP") for port in (80, 81)
    }  # fmt: skip
    deadline = time.monotonic() + 20
    observed = probe_matrix(pods)
    while observed != expected and time.monotonic() < deadline:
        observed = probe_matrix(pods)
    assert observed == expected
    assert (
        "plainnet.vxlan"
        in cluster.lab.run("node1", ["ip", "-o", "link"], capture_output=True, text=True).stdout
    )

    # x/a to node2's own address (outside the cluster CIDR, allowed by the ipBlock):
    # the masquerade table gives it node1's address, as without policies
    node2_address = str(cluster.lab.host("node2").ipv4)
    listener = netns.socket_in(cluster.lab.host("node2").namespace)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((node2_address, 9000))
    listener.listen(1)
    listener.settimeout(5)
    client = netns.socket_in(xa.namespace)
    client.settimeout(5)
    try:
        client.connect((node2_address, 9000))
        accepted, (origin, _) = listener.accept()
        accepted.close()
        assert origin == str(cluster.lab.host("node1").ipv4)
    finally:
        client.close()
        listener.close()


def test_an_agent_without_the_add_on_removes_a_table_left_behind(cluster_factory, lab_name):
    cluster = cluster_factory(lab_name, nodes=1, pods_per_node=0, cluster_cidrs=["10.244.0.0/16"])
    cluster.stop_agent("node1")
    left = (
        "table inet plainnet-policy {\n chain forward { type filter hook forward priority 0; }\n}\n"
    )
    cluster.lab.run("node1", ["nft", "-f", "-"], input=left, text=True, check=True)
    other = "table inet someone-else {\n}\n"
    cluster.lab.run("node1", ["nft", "-f", "-"], input=other, text=True, check=True)
    cluster.start_agent("node1")
    deadline = time.monotonic() + 15
    while "plainnet-policy" in tables(cluster):
        assert time.monotonic() < deadline, "the table stayed"
        time.sleep(0.2)
    assert "someone-else" in tables(cluster)  # only its own


def tables(cluster):
    return cluster.lab.run(
        "node1", ["nft", "list", "tables"], capture_output=True, text=True, check=True
    ).stdout
