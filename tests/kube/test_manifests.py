"""deploy/: valid against the Kubernetes OpenAPI schemas (kubernetes-validate, strict)
and accepted by the real API server; least privilege checked in the manifests."""

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
MANIFESTS = sorted(DEPLOY.glob("*.yaml"))


def documents():
    return [(path.name, doc) for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text())]


@pytest.mark.parametrize("version", ["1.25.0", kubernetes_validate.latest_version()])
def test_every_manifest_is_valid_against_the_schemas(version):
    for _, document in documents():
        kubernetes_validate.validate(document, version, strict=True)  # raises on any error
    assert {d["kind"] for _, d in documents()} >= {
        "DaemonSet",
        "Deployment",
        "ConfigMap",
        "ServiceAccount",
        "ClusterRole",
    }


def test_least_privilege():
    by_kind = {(d["kind"], d["metadata"]["name"]): d for _, d in documents()}
    agent_role = by_kind[("ClusterRole", "plainnet-agent")]
    assert agent_role["rules"] == [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}
    ]
    agent = by_kind[("DaemonSet", "plainnet-agent")]["spec"]["template"]["spec"]
    container = agent["containers"][0]["securityContext"]
    assert container["privileged"] is False
    assert container["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN", "SYS_ADMIN"]}
    assert agent["hostNetwork"] is True and agent["tolerations"] == [{"operator": "Exists"}]
    allocator = by_kind[("Deployment", "plainnet-allocator")]["spec"]
    assert allocator["replicas"] == 2
    assert allocator["template"]["spec"]["containers"][0]["securityContext"]["runAsNonRoot"]


@pytest.mark.root
@pytest.mark.kube
def test_the_real_api_server_accepts_every_manifest(kube):
    for path in MANIFESTS:
        kube.apply(path)
    status, daemonset = kube.request(
        "GET", "/apis/apps/v1/namespaces/kube-system/daemonsets/plainnet-agent"
    )
    assert status == 200 and daemonset["spec"]["template"]["spec"]["hostNetwork"]
    status, deployment = kube.request(
        "GET", "/apis/apps/v1/namespaces/kube-system/deployments/plainnet-allocator"
    )
    assert status == 200 and deployment["spec"]["replicas"] == 2
