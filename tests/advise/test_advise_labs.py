"""``plainnet advise --kubeconfig`` on a real one-node cluster (the other situations'
labs run it too: tests/kube/test_agent_kubernetes.py, tests/cloud/test_cloud_lab.py)."""

import pytest

from tests.helpers.advise import advise_on

pytestmark = [pytest.mark.root, pytest.mark.kube]


def test_one_server_needs_no_pod_network_component(cluster_factory, lab_name):
    cluster = cluster_factory(
        lab_name, nodes=1, pods_per_node=0, datastore="kubernetes", cluster_cidrs=["10.244.0.0/16"]
    )
    advice = advise_on(cluster, "node1")
    assert (advice["situation"], advice["backend"]) == ("one-server", None)
    status, node = cluster.kube.request("GET", "/api/v1/nodes/node1")
    assert status == 200
    pod_cidr = node["spec"]["podCIDR"]  # the bridge conflist hands out the node's podCIDR
    assert f'"subnet": "{pod_cidr}"' in advice["configuration"]
