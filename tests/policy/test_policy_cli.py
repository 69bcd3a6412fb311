"""The add-on as a user meets it: `plainnet lab up --datastore kubernetes
--network-policy`, a policy applied with kubectl through `plainnet lab kubeconfig`, and
`plainnet lab check` changing with it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from plainnet.lab import netns
from plainnet.testing.pytest_plugin import _run_prefix

pytestmark = [pytest.mark.root, pytest.mark.kube]

PLAINNET = [sys.executable, "-m", "plainnet.cli.main"]
DENY = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: default}
spec:
  podSelector: {matchLabels: {pod: node1-p1}}
  policyTypes: [Ingress]
"""


def plainnet(*args, **kwargs):
    return subprocess.run([*PLAINNET, *args], capture_output=True, text=True, **kwargs)


def door_pids(name):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                command = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if b"plainnet.lab.forward" in command and f"pn-{name}-".encode() in command:
                found.append(int(entry))
    return found


def test_kubectl_applies_a_policy_and_lab_check_shows_it(tmp_path):
    name = f"{_run_prefix()}cli"
    up = plainnet(
        "lab", "up", "--name", name, "--nodes", "2", "--pods-per-node", "1",
        "--datastore", "kubernetes", "--network-policy", timeout=240,
    )  # fmt: skip
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        kubeconfig = plainnet("lab", "kubeconfig", "--lab", name).stdout.strip()
        policy = tmp_path / "deny.yaml"
        policy.write_text(DENY)
        kubectl = ["kubectl", "--kubeconfig", kubeconfig]
        applied = subprocess.run([*kubectl, "apply", "-f", str(policy)], capture_output=True)
        assert applied.returncode == 0, applied.stderr
        deadline = time.monotonic() + 20
        while (check := plainnet("lab", "check", "--lab", name, "--json")).returncode == 0:
            assert time.monotonic() < deadline, "lab check never saw the policy"
            time.sleep(0.5)
        assert '"ok": false' in check.stdout
        denied = check.stdout.count('"tcp": false')
        assert denied == 1  # node2-p1 -> node1-p1; node1-p1's own traffic out is free
        deleted = subprocess.run([*kubectl, "delete", "-f", str(policy)], capture_output=True)
        assert deleted.returncode == 0, deleted.stderr
        deadline = time.monotonic() + 20
        while plainnet("lab", "check", "--lab", name).returncode != 0:
            assert time.monotonic() < deadline, "lab check never saw the policy go"
            time.sleep(0.5)
        assert door_pids(name)
    finally:
        plainnet("lab", "down", name)
    deadline = time.monotonic() + 5
    while door_pids(name):  # the door ends with the lab
        assert time.monotonic() < deadline, "the API door outlived its lab"
        time.sleep(0.2)
    assert not [n for n in netns.list_namespaces(f"pn-{name}")]


def test_lab_kubeconfig_without_an_api_server_says_so():
    result = plainnet("lab", "kubeconfig", "--lab", "nosuchlab")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and result.stderr.count("\n") <= 1
