"""``plainnet advise --kubeconfig`` against a real one-node cluster: a kube-apiserver
with one registered Node (the other situations' labs run advise on their nodes:
tests/kube/test_agent_kubernetes.py, tests/cloud/test_cloud_lab.py)."""

import json
import subprocess
import sys

import pytest

from plainnet.testing.etcd_server import EtcdServer
from plainnet.testing.kube_control_plane import KubeControlPlane

pytestmark = [pytest.mark.root, pytest.mark.kube]


@pytest.fixture(scope="module")
def kube():
    with EtcdServer() as etcd, KubeControlPlane(etcd.endpoint) as control_plane:
        yield control_plane


def test_one_server_needs_no_pod_network_component(kube):
    kube.create_node("box", ["192.0.2.10"])
    status, reply = kube.request(
        "PATCH", "/api/v1/nodes/box", {"spec": {"podCIDR": "10.244.7.0/24"}}
    )
    assert status == 200, reply
    result = _advise(kube)
    advice = json.loads(result.stdout)
    assert (advice["situation"], advice["backend"]) == ("one-server", None)
    assert '"subnet": "10.244.7.0/24"' in advice["configuration"]  # the Node's podCIDR


def test_an_unreachable_api_server_is_one_line(kube, tmp_path):
    config = json.loads(kube.kubeconfig("admin").read_text())
    config["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:1"
    broken = tmp_path / "broken.kubeconfig"
    broken.write_text(json.dumps(config))
    result = _advise(kube, broken)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("plainnet: cannot") and result.stderr.count("\n") == 1


def _advise(kube, kubeconfig=None):
    command = [sys.executable, "-m", "plainnet.cli.main", "advise", "--json", "--kubeconfig",
               str(kubeconfig or kube.kubeconfig("admin"))]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=60)
