"""The lab in real network namespaces: connectivity, routing, isolation, teardown."""

import subprocess
import textwrap
import time

import pytest

from plainnet.lab import netns
from plainnet.lab.builder import Lab, remove_everything, running_labs
from plainnet.lab.reachability import probe_all_pairs
from plainnet.lab.topology import Host, Segment, Topology, two_segments

pytestmark = pytest.mark.root


def ip(*args: str) -> str:
    """The `ip` tool, as an oracle of kernel state independent of pyroute2."""
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


def namespaces() -> set[str]:
    return {line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()}


def root_namespace_snapshot() -> dict[str, str]:
    return {
        "links": ip("-o", "link", "show").replace("\\", ""),
        "addresses": ip("-o", "addr", "show"),
        "routes4": ip("route", "show", "table", "all"),
        "routes6": ip("-6", "route", "show", "table", "all"),
        "rules": ip("rule", "show"),
        "ip_forward": open("/proc/sys/net/ipv4/ip_forward").read(),
        "ipv6_forwarding": open("/proc/sys/net/ipv6/conf/all/forwarding").read(),
    }


def test_three_hosts_on_one_segment_ping_each_other(lab):
    probes = probe_all_pairs(lab)
    assert len(probes) == 12  # 3 hosts x 2 others x (IPv4 + IPv6)
    assert [p for p in probes if not p.reached] == []
    # the kernel holds what the plan says, read back with iproute2
    host1 = lab.host("host1")
    assert "10.250.0.1/24" in ip("-n", host1.namespace, "-o", "addr", "show", "dev", "eth0")
    assert "br-lan" in ip("-n", lab.plan.fabric_namespace, "-o", "link", "show", "type", "bridge")


def test_ping_fails_for_an_address_no_host_has(lab):
    assert not lab.ping("host1", "10.250.0.99")


def test_two_segments_are_routed_through_the_router_namespace(lab_factory, lab_name):
    lab = lab_factory(two_segments(lab_name, 4))
    host1, host2 = lab.host("host1"), lab.host("host2")
    assert host1.interfaces[0].segment != host2.interfaces[0].segment
    assert lab.ping("host1", host2.ipv4)
    assert lab.ping("host1", host2.ipv6)
    trace = lab.run(
        "host1", ["ip", "route", "get", str(host2.ipv4)], capture_output=True, text=True
    ).stdout
    assert "via 10.250.1.1" in trace  # the router's address on host1's segment
    # the router really forwards: turn forwarding off and the segments are cut apart
    lab.run("router", ["sysctl", "-qw", "net.ipv4.ip_forward=0"], check=True)
    assert not lab.ping("host1", host2.ipv4)
    assert all(p.reached for p in probe_all_pairs(lab, ["host1", "host3"]))  # same segment


def test_lab_hosts_have_no_route_out_of_the_lab(lab_factory, lab_name):
    lab = lab_factory(two_segments(lab_name, 2))
    for host in lab.plan.hosts:
        routes = ip("-n", host.namespace, "route", "show") + ip("-n", host.namespace, "-6", "route")
        assert "default" not in routes
        result = lab.run(host.name, ["ip", "route", "get", "192.0.2.1"], capture_output=True)
        assert result.returncode != 0, f"{host.name} has a route to 192.0.2.1"


def test_a_lab_leaves_the_machines_own_namespace_untouched(lab_factory, lab_name):
    before = root_namespace_snapshot()
    lab = lab_factory(two_segments(lab_name, 2))
    during = root_namespace_snapshot()
    lab.down()
    after = root_namespace_snapshot()
    assert during == before
    assert after == before


def test_teardown_removes_namespaces_links_and_processes(lab_factory, lab_name):
    lab = lab_factory(two_segments(lab_name, 2))
    sleeper = lab.popen("host1", ["sleep", "300"])
    ours = {ns for ns in namespaces() if ns.startswith(f"pn-{lab_name}")}
    assert ours == set(lab.plan.namespaces)
    lab.down()
    assert not {ns for ns in namespaces() if ns.startswith(f"pn-{lab_name}")}
    assert sleeper.poll() is not None
    assert lab_name not in running_labs()
    lab.down()  # idempotent


def test_processes_started_by_others_inside_a_lab_are_stopped_on_down(lab_factory, lab_name):
    lab = lab_factory(
        Topology(
            name=lab_name,
            segments=[Segment(name="lan", ipv4="10.0.0.0/24")],
            hosts=[Host(name="a", segment="lan")],
        )
    )
    namespace = lab.host("a").namespace
    stray = subprocess.Popen(["ip", "netns", "exec", namespace, "sleep", "300"])
    deadline = time.monotonic() + 10
    while stray.pid not in netns.pids_inside(namespace):  # wait until it has entered
        assert time.monotonic() < deadline, "the stray process never entered the lab"
        time.sleep(0.02)
    lab.down()
    assert stray.wait(timeout=10) is not None


def test_building_a_lab_twice_is_refused(lab):
    with pytest.raises(Exception, match="already up"):
        Lab(lab.topology).up()
    assert lab.ping("host1", lab.host("host2").ipv4)  # the refusal broke nothing


def test_a_failed_build_tears_down_what_it_made(lab_name, monkeypatch):
    import plainnet.lab.builder as builder

    def broken(*args, **kwargs):
        raise RuntimeError("injected failure after the fabric was built")

    monkeypatch.setattr(builder.Lab, "_build_host", broken)
    with pytest.raises(RuntimeError, match="injected"):
        Lab(two_segments(lab_name, 2)).up()
    assert not {ns for ns in namespaces() if ns.startswith(f"pn-{lab_name}")}


def test_teardown_also_happens_when_a_test_fails(pytester, lab_name):
    pytester.makepyfile(
        textwrap.dedent(f"""
        from plainnet.lab.topology import single_segment

        def test_fails_with_a_lab_up(lab_factory):
            lab = lab_factory(single_segment("{lab_name}", 2))
            assert lab.ping("host1", lab.host("host2").ipv4)
            raise AssertionError("this test fails on purpose")
    """)
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    assert not {ns for ns in namespaces() if ns.startswith(f"pn-{lab_name}")}


def test_down_all_removes_leftovers_of_a_crashed_run(lab_name):
    # What a crashed run leaves: a namespace with no record, and a pn- link in the
    # machine's namespace (a veth pair whose both ends carry the prefix).
    subprocess.run(["ip", "netns", "add", f"pn-{lab_name}-orphan"], check=True)
    subprocess.run(
        ["ip", "link", "add", f"pn-{lab_name}a", "type", "veth", "peer", "name", f"pn-{lab_name}b"],
        check=True,
    )
    try:
        removed_namespaces, removed_links = remove_everything()
        assert f"pn-{lab_name}-orphan" in removed_namespaces
        assert f"pn-{lab_name}a" in removed_links or f"pn-{lab_name}b" in removed_links
        assert not [ns for ns in namespaces() if ns.startswith("pn-")]
        assert "pn-" not in ip("-o", "link", "show")
    finally:
        subprocess.run(["ip", "netns", "del", f"pn-{lab_name}-orphan"], capture_output=True)
        subprocess.run(["ip", "link", "del", f"pn-{lab_name}a"], capture_output=True)
