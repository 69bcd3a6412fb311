"""deploy/: valid against the Kubernetes OpenAPI schemas (kubernetes-validate, strict)
and accepted by the real API server; least privilege checked in the manifests."""

import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
MANIFESTS = sorted(DEPLOY.rglob("*.yaml"))


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


def test_every_container_names_the_built_image_and_never_pulls_it_by_a_short_name():
    version = tomllib.loads((DEPLOY.parent / "pyproject.toml").read_text())["project"]["version"]
    script = (DEPLOY.parent / "scripts" / "build-image.sh").read_text()
    assert 'image="localhost/plainnet:$version"' in script
    for _, document in documents():
        pod = document.get("spec", {}).get("template", {}).get("spec")
        for container in (pod or {}).get("initContainers", []) + (pod or {}).get("containers", []):
            assert container["image"] == f"localhost/plainnet:{version}"
            assert container["imagePullPolicy"] == "IfNotPresent"


def test_probes_follow_the_liveness_and_readiness_split():
    by_kind = {(d["kind"], d["metadata"]["name"]): d for _, d in documents()}
    agent = by_kind[("DaemonSet", "plainnet-agent")]["spec"]["template"]["spec"]["containers"][0]
    assert agent["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert agent["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert agent["readinessProbe"]["httpGet"]["path"] == "/readyz"
    startup = agent["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 30  # a slow first start
    assert agent["livenessProbe"]["failureThreshold"] >= 3


def test_the_allocator_needs_no_pod_network_and_runs_on_nodes_not_ready_yet():
    """It sets the podCIDRs the pod network needs: on the pod network it would wait for
    itself on a new cluster."""
    by_kind = {(d["kind"], d["metadata"]["name"]): d for _, d in documents()}
    pod = by_kind[("Deployment", "plainnet-allocator")]["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    tolerated = {t["key"] for t in pod["tolerations"]}
    assert tolerated >= {
        "node.kubernetes.io/not-ready",
        "node.cloudprovider.kubernetes.io/uninitialized",
        "node.kubernetes.io/network-unavailable",
        "node-role.kubernetes.io/control-plane",
    }


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
