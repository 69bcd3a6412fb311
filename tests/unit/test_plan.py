"""The diff between desired and kernel state: nexthop reuse, re-pointing, own-only."""

from ipaddress import ip_address, ip_network

from plainnet.agent.kernel_model import DesiredRoute, KernelNexthop, KernelRoute
from plainnet.agent.plan import (
    NEXTHOP_ID_BASE,
    KernelState,
    apply_plan_to_state,
    plan_changes,
)

P = 158


def want(dst, gw, ifindex=2):
    return DesiredRoute(ip_network(dst), ip_address(gw), ifindex, "n")


def test_from_empty_creates_one_nexthop_per_gateway():
    desired = {
        r.destination: r
        for r in [
            want("10.244.2.0/24", "10.250.0.2"),
            want("fd00:10:0:2::/64", "fd00:250::2"),
            want("10.244.9.0/24", "10.250.0.2"),
        ]
    }
    plan = plan_changes(desired, KernelState())
    assert len(plan.create_nexthops) == 2
    assert len(plan.add_routes) == 3
    assert not plan.delete_routes and not plan.delete_nexthops


def test_converged_state_needs_nothing():
    desired = {r.destination: r for r in [want("10.244.2.0/24", "10.250.0.2")]}
    state = KernelState()
    plan = plan_changes(desired, state)
    apply_plan_to_state(plan, state, set(), P)
    assert not plan_changes(desired, state)


def test_stale_routes_and_nexthops_are_removed_and_moved_routes_repointed():
    state = KernelState(
        routes={
            ip_network("10.244.2.0/24"): KernelRoute(ip_network("10.244.2.0/24"), 7, None, 2),
            ip_network("10.244.3.0/24"): KernelRoute(ip_network("10.244.3.0/24"), 8, None, 2),
        },
        nexthops={
            7: KernelNexthop(7, ip_address("10.250.0.2"), 2, P),
            8: KernelNexthop(8, ip_address("10.250.0.3"), 2, P),
        },
        used_nexthop_ids={7, 8, NEXTHOP_ID_BASE},  # NEXTHOP_ID_BASE is someone else's
    )
    desired = {ip_network("10.244.2.0/24"): want("10.244.2.0/24", "10.250.0.9")}
    plan = plan_changes(desired, state)
    [(new_id, gateway, _, onlink)] = plan.create_nexthops
    assert not onlink
    assert new_id != NEXTHOP_ID_BASE and new_id not in (7, 8)
    assert str(gateway) == "10.250.0.9"
    assert [d for d, _, _ in plan.replace_routes] == [ip_network("10.244.2.0/24")]
    assert [r.destination for r in plan.delete_routes] == [ip_network("10.244.3.0/24")]
    assert sorted(plan.delete_nexthops) == [7, 8]


def test_duplicate_nexthops_of_ours_are_collapsed():
    state = KernelState(
        nexthops={
            5: KernelNexthop(5, ip_address("10.250.0.2"), 2, P),
            6: KernelNexthop(6, ip_address("10.250.0.2"), 2, P),
        },
        used_nexthop_ids={5, 6},
    )
    plan = plan_changes({ip_network("10.244.2.0/24"): want("10.244.2.0/24", "10.250.0.2")}, state)
    assert plan.delete_nexthops == [6]
    assert plan.add_routes[0][1] == 5
