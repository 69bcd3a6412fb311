"""Pod address policy on the in-memory store (no I/O)."""

from ipaddress import ip_address, ip_network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plainnet.ipam import AddressExhaustedError, PodAddressAllocator
from plainnet.ipam.errors import IpamError
from plainnet.ipam.pod_addresses import next_free_address, pod_capacity, reserved_addresses
from plainnet.testing.memory_store import MemoryPodAddressStore


def allocator(subnet: str) -> PodAddressAllocator:
    return PodAddressAllocator(ip_network(subnet), MemoryPodAddressStore())


def test_network_gateway_and_broadcast_are_reserved():
    pods = allocator("10.244.1.0/30")  # 4 addresses: network, gateway, one pod, broadcast
    assert pods.gateway == ip_address("10.244.1.1")
    assert pods.allocate("c1", "eth0") == ip_address("10.244.1.2")
    with pytest.raises(AddressExhaustedError, match=r"10\.244\.1\.0/30 .*all 1 are in use"):
        pods.allocate("c2", "eth0")


def test_ipv6_reserves_network_and_gateway_only():
    subnet = ip_network("fd00::/126")
    assert reserved_addresses(subnet) == {ip_address("fd00::"), ip_address("fd00::1")}
    assert pod_capacity(subnet) == 2
    pods = allocator("fd00::/126")
    assert {pods.allocate("a", "eth0"), pods.allocate("b", "eth0")} == {
        ip_address("fd00::2"),
        ip_address("fd00::3"),
    }


def test_allocation_is_idempotent_per_container_and_interface():
    pods = allocator("10.0.0.0/24")
    first = pods.allocate("c1", "eth0")
    assert pods.allocate("c1", "eth0") == first
    assert pods.allocate("c1", "net1") != first  # a second interface is a second address


def test_allocation_continues_after_the_last_one_handed_out():
    pods = allocator("10.0.0.0/24")
    a = pods.allocate("crashloop-1", "eth0")
    pods.release("crashloop-1")
    b = pods.allocate("crashloop-2", "eth0")
    assert b != a, "a restarted pod must not get the old address straight back"
    assert b == a + 1


def test_allocation_wraps_around_to_freed_addresses():
    pods = allocator("10.0.0.0/29")  # 5 pod addresses .2 - .6
    got = [pods.allocate(f"c{i}", "eth0") for i in range(5)]
    assert [str(a) for a in got] == [f"10.0.0.{i}" for i in range(2, 7)]
    pods.release("c1")
    assert pods.allocate("c9", "eth0") == ip_address("10.0.0.3")


def test_release_by_container_id_and_interface():
    pods = allocator("10.0.0.0/24")
    a = pods.allocate("c1", "eth0")
    b = pods.allocate("c1", "net1")
    assert pods.release("c1", "net1") == [b]
    assert pods.release("c1") == [a]
    assert pods.release("c1") == []  # idempotent, like CNI DEL
    assert pods.release("never-seen") == []


def test_garbage_collect_keeps_only_valid_attachments():
    pods = allocator("10.0.0.0/24")
    keep = pods.allocate("alive", "eth0")
    leaked = [pods.allocate("gone", "eth0"), pods.allocate("alive", "net1")]
    assert pods.garbage_collect({("alive", "eth0")}) == sorted(leaked)
    assert [r.address for r in pods.reservations()] == [keep]


def test_reserve_specific_address():
    pods = allocator("10.0.0.0/24")
    pods.reserve(ip_address("10.0.0.50"), "c1", "eth0")
    with pytest.raises(IpamError, match="held by container c1"):
        pods.reserve(ip_address("10.0.0.50"), "c2", "eth0")
    with pytest.raises(IpamError, match="not a pod address"):
        pods.reserve(ip_address("10.0.0.1"), "c2", "eth0")


def test_large_ipv6_subnet_search_is_bounded():
    subnet = ip_network("fd00::/64")
    taken = {subnet.network_address + i: None for i in range(2, 1000)}
    assert next_free_address(subnet, taken, None) == subnet.network_address + 1000


def test_missing_owner_is_refused():
    with pytest.raises(IpamError, match="container id and an interface"):
        allocator("10.0.0.0/24").allocate("", "eth0")


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(["10.0.0.0/28", "10.0.0.0/29", "fd00::/124"]),
    st.lists(st.tuples(st.sampled_from(["add", "del", "gc"]), st.integers(0, 20)), max_size=80),
)
def test_never_hands_out_a_held_address(subnet, ops):
    pods = allocator(subnet)
    held: dict[str, object] = {}
    for op, n in ops:
        cid = f"c{n}"
        if op == "add":
            try:
                address = pods.allocate(cid, "eth0")
            except AddressExhaustedError:
                assert len(held) == pod_capacity(ip_network(subnet))
                continue
            if cid in held:
                assert held[cid] == address
            else:
                assert address not in held.values(), f"{address} handed out twice"
                assert address not in reserved_addresses(ip_network(subnet))
                held[cid] = address
        elif op == "del":
            pods.release(cid)
            held.pop(cid, None)
        else:
            valid = {(c, "eth0") for c in held if int(c[1:]) % 2 == 0}
            pods.garbage_collect(valid)
            held = {c: a for c, a in held.items() if (c, "eth0") in valid}
    assert {r.address for r in pods.reservations()} == set(held.values())
