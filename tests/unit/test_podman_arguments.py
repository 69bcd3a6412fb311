"""The translation of a manifest's container into `podman run` arguments: what the
image tests rely on to run containers exactly as kubelet would."""

from pathlib import Path

import pytest

from plainnet.errors import PlainnetError
from plainnet.testing.podman import PodContext, expand, run_arguments


def context(tmp_path: Path) -> PodContext:
    return PodContext(
        node_name="node1",
        pod_name="agent-x",
        namespace="kube-system",
        config_maps={"cfg": {"backend": "vxlan"}},
        host_path=lambda path: tmp_path / path.lstrip("/"),
        host_network=Path("/var/run/netns/pn-a-node1"),
        service_account=tmp_path / "sa",
        api_server=("10.0.0.1", 6443),
    )


def test_expansion_is_kubelets():
    env = {"A": "1", "B": "$(A)"}
    assert expand("x$(A)y", env) == "x1y"
    assert expand("$(MISSING)", env) == "$(MISSING)"
    assert expand("$$(A)", env) == "$(A)"


def test_a_daemonset_container_gets_its_settings(tmp_path):
    pod = {
        "hostNetwork": True,
        "serviceAccountName": "plainnet-agent",
        "volumes": [{"name": "run", "hostPath": {"path": "/run/x", "type": "DirectoryOrCreate"}}],
    }
    container = {
        "name": "agent",
        "image": "ignored",
        "command": ["plainnet", "agent", "--node-name", "$(NODE)", "--backend", "$(BACKEND)"],
        "env": [
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {
                "name": "BACKEND",
                "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "backend"}},
            },
        ],
        "securityContext": {
            "privileged": False,
            "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN"]},
        },
        "volumeMounts": [
            {"name": "run", "mountPath": "/run/x", "mountPropagation": "HostToContainer"}
        ],
    }
    args = run_arguments(pod, container, "img", context(tmp_path))
    assert args[-6:] == ["img", "agent", "--node-name", "node1", "--backend", "vxlan"]
    assert "--entrypoint=plainnet" in args
    assert {"--cap-drop=ALL", "--cap-add=NET_ADMIN"} <= set(args)
    assert "--network=ns:/var/run/netns/pn-a-node1" in args
    assert f"--volume={tmp_path}/run/x:/run/x:rw,rslave" in args
    assert (tmp_path / "run/x").is_dir()
    assert "--env=KUBERNETES_SERVICE_HOST=10.0.0.1" in args
    assert any(a.endswith(":/var/run/secrets/kubernetes.io/serviceaccount:ro") for a in args)


def test_settings_it_cannot_give_are_refused_not_dropped(tmp_path):
    with pytest.raises(PlainnetError, match="ports"):
        run_arguments({}, {"name": "c", "ports": [{"containerPort": 1}]}, "i", context(tmp_path))
    with pytest.raises(PlainnetError, match="seccompProfile"):
        run_arguments(
            {}, {"name": "c", "securityContext": {"seccompProfile": {}}}, "i", context(tmp_path)
        )
    with pytest.raises(PlainnetError, match="hostPath"):
        run_arguments(
            {"volumes": [{"name": "v", "emptyDir": {}}]},
            {"name": "c", "volumeMounts": [{"name": "v", "mountPath": "/v"}]},
            "i",
            context(tmp_path),
        )
