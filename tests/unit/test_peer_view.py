"""The incremental peer view must always equal a full rebuild (checked by hypothesis)."""

from collections import Counter
from ipaddress import ip_address, ip_network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.helpers.routing import context

from plainnet.agent.kernel_model import LinkEntries
from plainnet.agent.local_networks import LocalNetwork
from plainnet.agent.peer_view import PeerView
from plainnet.agent.plan import (
    KernelState,
    Plan,
    apply_plan_to_state,
    plan_changes,
    plan_entries,
    plan_subset,
)
from plainnet.datastore.records import InvalidRecord, PeerRecord

CLUSTER = [ip_network("10.244.0.0/16")]
LOCAL = [LocalNetwork(ip_network("10.250.0.0/24"), 2, "eth0", ip_address("10.250.0.1"))]
OWN = PeerRecord(
    "own", "own", (ip_network("10.244.1.0/24"),), (ip_address("10.250.0.1"),), "host-gw"
)
SUBNETS = [
    "10.244.2.0/24",
    "10.244.3.0/24",
    "10.244.2.0/23",
    "10.244.1.128/25",
    "10.244.9.0/24",
    "10.9.0.0/24",
]
GATEWAYS = ["10.250.0.2", "10.250.0.3", "192.168.0.9"]

change = st.tuples(
    st.integers(0, 7),  # key
    st.one_of(
        st.none(), st.tuples(st.sampled_from(SUBNETS), st.sampled_from(GATEWAYS), st.booleans())
    ),
)


#: auto: peers on 10.250.0.0/24 are routed directly, 192.168.0.9 through the overlay.
AUTO = context("auto", LOCAL, ifindex=9)
HOST_GW = context("host-gw", LOCAL)


def make(key: str, spec, revision: int, routing):
    if spec is None:
        return None
    subnet, gateway, valid = spec
    if not valid:
        return InvalidRecord(key, "broken", revision)
    return PeerRecord(
        key,
        key,
        (ip_network(subnet),),
        (ip_address(gateway),),
        routing.backend.record_type,
        claimed_at=revision,
    )


def fresh(records, routing=HOST_GW):
    view = PeerView(OWN, CLUSTER, routing)
    view.rebuild(records)
    return view


@pytest.mark.parametrize("routing", [HOST_GW, AUTO], ids=["host-gw", "auto"])
@settings(max_examples=300, deadline=None)
@given(batches=st.lists(st.lists(change, min_size=1, max_size=3), max_size=25))
def test_incremental_updates_equal_a_rebuild(routing, batches):
    records: dict = {}
    view = fresh(records, routing)
    kernel = KernelState()
    entries_in_kernel = LinkEntries()
    apply_plan_to_state(plan_changes(view.desired, kernel), kernel, set(), 158)
    revision = 0
    for batch in batches:
        keys = set()
        for number, spec in batch:
            revision += 1
            key = f"k{number}"
            keys.add(key)
            record = make(key, spec, revision, routing)
            if record is None:
                records.pop(key, None)
            else:
                records[key] = record
        touched = view.update(records, keys)
        if touched is None:
            view = fresh(records, routing)
            plan = plan_changes(view.desired, kernel)
        else:
            plan = plan_subset(view.desired, kernel, touched, view.nexthop_refs)
        apply_plan_to_state(plan, kernel, set(), 158)
        expected = fresh(records, routing)
        assert view.accepted == expected.accepted
        assert view.desired == expected.desired
        assert {k: r.reason for k, r in view.refusals.items()} == {
            k: r.reason for k, r in expected.refusals.items()
        }
        assert +view.nexthop_refs == +Counter(expected.nexthop_refs)
        # the VXLAN entries too, and an incremental diff of them finds what a full one does
        assert view.entries == expected.entries
        if touched is not None:
            full, partial = Plan(), Plan()
            plan_entries(full, view.entries, entries_in_kernel)
            plan_entries(partial, view.entries, entries_in_kernel, view.touched_entries)
            assert sorted(map(str, full.set_neighbours + full.delete_neighbours)) == sorted(
                map(str, partial.set_neighbours + partial.delete_neighbours)
            )
            assert (sorted(full.set_fdb), sorted(full.delete_fdb)) == (
                sorted(partial.set_fdb),
                sorted(partial.delete_fdb),
            )
        entry_plan = Plan()
        plan_entries(entry_plan, view.entries, entries_in_kernel)
        entry_state = KernelState(entries=entries_in_kernel)
        apply_plan_to_state(entry_plan, entry_state, set(), 158)
        assert entries_in_kernel == view.entries
        # and the kernel, as the plans left it, holds exactly the desired routes
        assert {d: kernel.nexthops[r.nexthop_id].gateway for d, r in kernel.routes.items()} == {
            d: r.gateway for d, r in expected.desired.items()
        }
        used = {r.nexthop_id for r in kernel.routes.values()}
        assert set(kernel.nexthops) == used, "no nexthop left without a route"
