"""The plainnet command as a user runs it: real processes, exit codes, one-line errors."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

PLAINNET = str(Path(sys.executable).parent / "plainnet")


def plainnet(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([PLAINNET, *args], capture_output=True, text=True, timeout=120, **kwargs)


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["ipam", "plan", "--cluster-cidr", "10.0.0.0/33"],
            "plainnet: cluster CIDR 10.0.0.0/33: not a valid network",
        ),
        (
            ["ipam", "plan", "--cluster-cidr", "10.0.0.0/16", "--node-mask-ipv4", "12"],
            "plainnet: node mask /12 must be longer than the mask of cluster CIDR 10.0.0.0/16",
        ),
        (
            ["lab", "exec", "--lab", "nosuchlab", "host1", "--", "true"],
            "plainnet: no lab named 'nosuchlab' is up",
        ),
        (
            [
                "etcd",
                "init",
                "--etcd-endpoint",
                "http://127.0.0.1:1",
                "--cluster-cidr",
                "10.244.0.0/16",
                "--backend",
                "vxlan",
                "--vxlan-vni",
                "0",
            ],
            "plainnet: VXLAN VNI 0: out of range (1 to 16777215)",
        ),
        (
            ["agent", "--etcd-endpoint", "http://[::1", "--metrics", "off"],
            "plainnet: etcd endpoint 'http://[::1': expected http://HOST:PORT (Invalid IPv6 URL)",
        ),
        (
            ["agent", "--etcd-endpoint", "http://127.0.0.1:99999", "--metrics", "off"],
            "plainnet: etcd endpoint 'http://127.0.0.1:99999': expected http://HOST:PORT (Port",
        ),
        (
            ["etcd", "init", "--etcd-endpoint", "http://[::1", "--cluster-cidr", "10.0.0.0/8"],
            "plainnet: etcd endpoint 'http://[::1': expected http://HOST:PORT",
        ),
        (
            ["agent", "--etcd-endpoint", "https://127.0.0.1:2379"],
            "plainnet: etcd endpoint 'https://127.0.0.1:2379': expected http://HOST:PORT "
            "(scheme 'https' is not supported)",
        ),
        (
            ["agent", "--etcd-endpoint", "http://127.0.0.1:1", "--backend", "vxlan"],
            "plainnet: --backend is for the Kubernetes datastore; with etcd",
        ),
    ],
)
def test_user_errors_are_one_line_without_traceback(args, line):
    """(The endpoint cases printed a 39-line traceback before.)"""
    result = plainnet(*args)
    assert result.returncode == 1
    assert result.stderr.startswith(line)
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_ipam_plan_prints_the_split():
    result = plainnet(
        "ipam", "plan", "--cluster-cidr", "10.244.0.0/16", "--cluster-cidr", "fd00:10::/48"
    )
    assert result.returncode == 0, result.stderr
    assert "10.244.255.0/24" in result.stdout
    assert "65,536" in result.stdout


@pytest.mark.root
def test_lab_lifecycle_through_the_cli(lab_name):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    try:
        up = plainnet("lab", "up", "--name", lab_name, "--topology", "two-segments", "--hosts", "2")
        assert up.returncode == 0, up.stderr
        assert "10.250.1.2/24" in up.stdout
        check = plainnet("lab", "check", "--lab", lab_name)
        assert check.returncode == 0, check.stdout
        assert "4 of 4 probes answered" in check.stdout
        executed = plainnet(
            "lab", "exec", "--lab", lab_name, "host1", "--", "ping", "-c1", "-W1", "10.250.2.2"
        )
        assert executed.returncode == 0, executed.stdout + executed.stderr
        failing = plainnet("lab", "exec", "--lab", lab_name, "host1", "--", "sh", "-c", "exit 7")
        assert failing.returncode == 7  # the command's own exit code
        status = plainnet("lab", "status", lab_name)
        assert "pn-" + lab_name + "-router" in status.stdout
        again = plainnet("lab", "up", "--name", lab_name)
        assert again.returncode == 1 and "already up" in again.stderr
    finally:
        down = plainnet("lab", "down", lab_name)
    assert down.returncode == 0
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"pn-{lab_name}" not in listed


def test_every_network_command_takes_comma_separated_cluster_cidrs():
    """``ipam plan`` and ``etcd init`` refused what ``agent`` accepted."""
    result = plainnet("ipam", "plan", "--cluster-cidr", "10.244.0.0/16,fd00::/48")
    assert result.returncode == 0, result.stderr
    assert "10.244.0.0/16" in result.stdout and "fd00::/48" in result.stdout


@pytest.mark.root
def test_sigterm_during_start_up_ends_the_agent_at_once():
    """Waiting for an etcd that is not there, the agent still answers SIGTERM (before,
    only SIGKILL ended it)."""
    if os.geteuid() != 0:
        pytest.skip("needs a network namespace of its own (unshare --net)")
    agent = subprocess.Popen(
        ["unshare", "--net", PLAINNET, "agent", "--etcd-endpoint", "http://127.0.0.1:1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(2.5)
        assert agent.poll() is None, agent.stderr.read()
        started = time.monotonic()
        agent.terminate()  # unshare passes the signal on: it execs the agent
        assert agent.wait(timeout=3) == 0
        assert time.monotonic() - started < 3
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    assert "retrying" in agent.stderr.read()
