"""Node subnet allocation: the pure core, including properties checked by hypothesis."""

import itertools
import time
from ipaddress import ip_network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plainnet.ipam import (
    NodeSubnetAllocator,
    SubnetConflictError,
    SubnetExhaustedError,
    SubnetOutOfRangeError,
    SubnetPool,
)


def test_defaults_follow_kube_controller_manager():
    assert SubnetPool(ip_network("10.244.0.0/16")).node_prefix == 24
    assert SubnetPool(ip_network("fd00::/48")).node_prefix == 64


def test_allocates_in_order_and_wraps_after_release():
    pool = SubnetPool(ip_network("10.0.0.0/22"), 24)
    assert [str(pool.allocate()) for _ in range(4)] == [
        "10.0.0.0/24",
        "10.0.1.0/24",
        "10.0.2.0/24",
        "10.0.3.0/24",
    ]
    pool.release(ip_network("10.0.1.0/24"))
    assert str(pool.allocate()) == "10.0.1.0/24"


def test_released_subnet_is_not_reused_before_the_rest_of_the_space():
    pool = SubnetPool(ip_network("10.0.0.0/16"), 24)
    first = pool.allocate()
    pool.allocate()
    pool.release(first)
    assert pool.allocate() != first


def test_exhaustion_names_the_cidr_and_its_size():
    pool = SubnetPool(ip_network("10.0.0.0/23"), 24)
    pool.allocate()
    pool.allocate()
    with pytest.raises(SubnetExhaustedError, match=r"10\.0\.0\.0/23 .*all 2 /24 subnets"):
        pool.allocate()


@pytest.mark.parametrize(
    ("cluster", "mask", "message"),
    [
        ("10.0.0.0/16", 16, "must be longer"),
        ("10.0.0.0/16", 8, "must be longer"),
        ("10.0.0.0/16", 31, "leaves no pod addresses"),
        ("fd00::/48", 127, "leaves no pod addresses"),
    ],
)
def test_refuses_unusable_node_masks(cluster, mask, message):
    with pytest.raises(SubnetOutOfRangeError, match=message):
        SubnetPool(ip_network(cluster), mask)


@pytest.mark.parametrize(
    ("subnet", "message"),
    [
        ("10.1.0.0/24", "outside cluster CIDR"),
        ("10.0.0.0/25", "does not match the node mask"),
        ("fd00::/64", "outside cluster CIDR"),
    ],
)
def test_occupy_refuses_foreign_subnets(subnet, message):
    pool = SubnetPool(ip_network("10.0.0.0/16"), 24)
    with pytest.raises(SubnetOutOfRangeError, match=message):
        pool.occupy(ip_network(subnet))


def test_occupy_then_allocate_skips_occupied():
    pool = SubnetPool(ip_network("10.0.0.0/16"), 24)
    pool.occupy(ip_network("10.0.0.0/24"))
    pool.occupy(ip_network("10.0.2.0/24"))
    with pytest.raises(SubnetConflictError):
        pool.occupy(ip_network("10.0.2.0/24"))
    got = {str(pool.allocate()) for _ in range(2)}
    assert got == {"10.0.3.0/24", "10.0.4.0/24"}  # next-fit continues after the last taken


def test_release_of_unallocated_is_refused():
    pool = SubnetPool(ip_network("10.0.0.0/16"), 24)
    with pytest.raises(SubnetConflictError, match="not allocated"):
        pool.release(ip_network("10.0.7.0/24"))


@pytest.mark.parametrize("cluster", ["10.0.0.0/8", "fd00::/48"])
def test_full_split_of_65536_subnets_is_fast(cluster):
    pool = SubnetPool(ip_network(cluster))
    started = time.perf_counter()
    subnets = [pool.allocate() for _ in range(pool.size)]
    elapsed = time.perf_counter() - started
    assert pool.size == 65_536
    assert len(set(subnets)) == 65_536
    assert pool.free_count == 0
    assert elapsed < 1.0, f"{elapsed:.2f}s to allocate 65,536 subnets"
    with pytest.raises(SubnetExhaustedError):
        pool.allocate()


def test_huge_ipv6_space_is_never_materialised():
    pool = SubnetPool(ip_network("fd00::/32"), 64)
    assert pool.size == 2**32
    last = pool.subnet_at(pool.size - 1)
    assert str(last) == "fd00:0:ffff:ffff::/64"
    pool.occupy(last)
    assert pool.is_allocated(last)
    assert str(pool.allocate()) == "fd00::/64"  # wrapped around after the last index
    pool.release(last)
    assert not pool.is_allocated(last)
    assert pool.allocated_count == 1


def test_dual_stack_allocates_both_families_or_neither():
    allocator = NodeSubnetAllocator(
        [ip_network("10.0.0.0/23"), ip_network("fd00::/62")], {4: 24, 6: 64}
    )
    assert [str(s) for s in allocator.allocate()] == ["10.0.0.0/24", "fd00::/64"]
    assert [str(s) for s in allocator.allocate()] == ["10.0.1.0/24", "fd00:0:0:1::/64"]
    v4, v6 = allocator.pools
    with pytest.raises(SubnetExhaustedError, match=r"10\.0\.0\.0/23"):
        allocator.allocate()
    assert (v4.allocated_count, v6.allocated_count) == (2, 2)  # IPv6 untouched


def test_dual_stack_refuses_two_cidrs_of_one_family():
    with pytest.raises(SubnetOutOfRangeError, match="one cluster CIDR per address family"):
        NodeSubnetAllocator([ip_network("10.0.0.0/16"), ip_network("10.1.0.0/16")])


def test_dual_stack_occupy_is_atomic():
    allocator = NodeSubnetAllocator([ip_network("10.0.0.0/16"), ip_network("fd00::/48")])
    allocator.occupy([ip_network("fd00:0:0:5::/64")])
    with pytest.raises(SubnetConflictError):
        allocator.occupy([ip_network("10.0.5.0/24"), ip_network("fd00:0:0:5::/64")])
    assert not allocator.pools[0].is_allocated(ip_network("10.0.5.0/24"))


# --- properties -----------------------------------------------------------------------

clusters = st.sampled_from(
    [
        ("10.0.0.0/20", 24),
        ("10.128.0.0/9", 26),
        ("fd00::/56", 64),
        ("fd00:1::/32", 64),
        ("192.168.0.0/24", 28),
    ]
)
operations = st.lists(
    st.tuples(st.sampled_from(["allocate", "release"]), st.integers(0, 10**6)), max_size=120
)


@settings(max_examples=150, deadline=None)
@given(clusters, operations)
def test_no_two_allocated_subnets_overlap_and_release_never_duplicates(cluster, ops):
    cidr, mask = cluster
    pool = SubnetPool(ip_network(cidr), mask)
    held: list = []
    for op, pick in ops:
        if op == "allocate":
            try:
                subnet = pool.allocate()
            except SubnetExhaustedError:
                assert len(held) == pool.size
                continue
            assert subnet.subnet_of(pool.cluster)
            assert subnet.prefixlen == mask
            assert subnet not in held, f"{subnet} handed out twice"
            held.append(subnet)
        elif held:
            pool.release(held.pop(pick % len(held)))
    assert sorted(pool.allocated()) == sorted(held)
    ordered = sorted(held)
    for a, b in itertools.pairwise(ordered):
        assert not a.overlaps(b)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6), st.integers(0, 12))
def test_dual_stack_atomicity(v4_bits, v6_bits, attempts):
    allocator = NodeSubnetAllocator(
        [ip_network(f"10.0.0.0/{24 - v4_bits}"), ip_network(f"fd00::/{64 - v6_bits}")]
    )
    v4, v6 = allocator.pools
    for _ in range(attempts):
        try:
            pair = allocator.allocate()
            assert [s.version for s in pair] == [4, 6]
        except SubnetExhaustedError:
            pass
        assert v4.allocated_count == v6.allocated_count  # never one without the other
    assert v4.allocated_count == min(attempts, v4.size, v6.size)
