"""The etcd datastore against a real etcd server: Flannel's format, races, watches."""

import asyncio
import json
from ipaddress import ip_address, ip_network

import aetcd
import aetcd.transactions
import pytest

from plainnet.datastore import etcd as etcd_module
from plainnet.datastore import flannel_format as fmt
from plainnet.datastore.etcd import EtcdDatastore
from plainnet.datastore.records import (
    DatastoreError,
    HistoryCompacted,
    InvalidRecord,
    NodeClaim,
    PeerRecord,
)

CIDRS = [ip_network("10.244.0.0/16"), ip_network("fd00:10::/48")]
SUBNETS = "/coreos.com/network/subnets/"


def run(coroutine):
    return asyncio.run(coroutine)


async def configured(endpoint, cidrs=CIDRS, ttl=60):
    store = EtcdDatastore(endpoint, ttl_seconds=ttl)
    await store.put_network_config(fmt.render_config(cidrs, {4: 24, 6: 64}, "host-gw"))
    return store


def claim(node, v4, v6=None, previous=()):
    addresses = (ip_address(v4),) + ((ip_address(v6),) if v6 else ())
    return NodeClaim(node, addresses, "host-gw", previous_subnets=previous)


def raw_client(endpoint):
    host, port = endpoint.removeprefix("http://").split(":")
    return aetcd.Client(host=host, port=int(port))


def test_claim_writes_flannels_key_and_value_with_a_lease(etcd_server):
    async def scenario():
        store = await configured(etcd_server.endpoint)
        record = await store.claim(claim("node1", "10.250.0.1", "fd00:250::1"))
        assert record.key == SUBNETS + "10.244.1.0-24&fd00:10:0:1::-64"  # first one skipped
        client = raw_client(etcd_server.endpoint)
        stored = await client.get(record.key.encode())
        assert json.loads(stored.value) == {
            "PublicIP": "10.250.0.1",
            "PublicIPv6": "fd00:250::1",
            "BackendType": "host-gw",
            "PlainnetNode": "node1",
        }
        assert stored.lease != 0  # attached to an etcd lease, so it expires with its node
        info = await client.get_lease_info(stored.lease)
        assert 0 < info.TTL <= 60
        await client.close()
        await store.close()

    run(scenario())


def test_racing_nodes_never_share_a_subnet(etcd_server):
    async def scenario():
        await configured(etcd_server.endpoint)
        stores = [EtcdDatastore(etcd_server.endpoint) for _ in range(12)]
        records = await asyncio.gather(
            *[store.claim(claim(f"n{i}", f"10.250.0.{10 + i}")) for i, store in enumerate(stores)]
        )
        assert len({r.key for r in records}) == 12
        snapshot = await stores[0].list()
        assert len(snapshot.records) == 12
        for store in stores:
            await store.close()

    run(scenario())


def test_a_restarted_node_reclaims_its_subnet(etcd_server):
    async def scenario():
        first = await configured(etcd_server.endpoint)
        before = await first.claim(claim("node1", "10.250.0.1"))
        await first.close()
        other = EtcdDatastore(etcd_server.endpoint)
        await other.claim(claim("node2", "10.250.0.2"))
        again = EtcdDatastore(etcd_server.endpoint)
        after = await again.claim(claim("node1", "10.250.0.1"))
        assert after.key == before.key
        assert len((await again.list()).records) == 2
        for store in (other, again):
            await store.close()

    run(scenario())


def test_a_record_with_only_this_nodes_name_is_not_adopted(etcd_server):
    """Anyone can write ``PlainnetNode: node1``: it used to make node1 adopt that subnet
    on restart, leaving the one it held (and its pods) behind."""

    async def scenario():
        store = await configured(etcd_server.endpoint)
        held = await store.claim(claim("node1", "10.250.0.1"))
        await store.close()
        client = raw_client(etcd_server.endpoint)
        for octet, address in ((7, "10.250.0.66"), (8, "10.250.0.1")):
            value = {"PublicIP": address, "BackendType": "host-gw", "PlainnetNode": "node1"}
            await client.put(f"{SUBNETS}10.244.{octet}.0-24".encode(), json.dumps(value).encode())
        again = EtcdDatastore(etcd_server.endpoint)
        # name and address match at 10.244.8.0, but node1's own subnet.json names its lease
        after = await again.claim(claim("node1", "10.250.0.1", previous=held.subnets))
        assert after.key == held.key
        await again.close()
        # a name without the address is no reclaim: node1 on another address, no
        # subnet.json, takes a free subnet, none of those carrying its name
        fresh = EtcdDatastore(etcd_server.endpoint)
        other = await fresh.claim(claim("node1", "10.250.0.99"))  # another address
        assert other.key not in (held.key, f"{SUBNETS}10.244.7.0-24", f"{SUBNETS}10.244.8.0-24")
        await fresh.close()
        await client.close()

    run(scenario())


def test_previous_subnet_is_reclaimed_when_free_and_not_when_taken(etcd_server):
    async def scenario():
        store = await configured(etcd_server.endpoint, cidrs=[ip_network("10.244.0.0/16")])
        wanted = (ip_network("10.244.77.0/24"),)
        mine = await store.claim(claim("node1", "10.250.0.1", previous=wanted))
        assert mine.subnets == wanted
        thief = EtcdDatastore(etcd_server.endpoint)
        theirs = await thief.claim(claim("node2", "10.250.0.2", previous=wanted))
        assert theirs.subnets != wanted
        await store.close()
        await thief.close()

    run(scenario())


def test_leases_written_by_flannel_are_listed_and_bad_ones_reported(etcd_server):
    async def scenario():
        store = await configured(etcd_server.endpoint)
        client = raw_client(etcd_server.endpoint)
        await client.put(
            f"{SUBNETS}10.244.9.0-24".encode(), b'{"PublicIP":"10.250.0.9","BackendType":"host-gw"}'
        )
        await client.put(f"{SUBNETS}10.244.10.0-24".encode(), b"garbage")
        snapshot = await store.list()
        flannel = snapshot.records[f"{SUBNETS}10.244.9.0-24"]
        assert isinstance(flannel, PeerRecord) and flannel.node == "10.250.0.9"
        assert isinstance(snapshot.records[f"{SUBNETS}10.244.10.0-24"], InvalidRecord)
        await client.close()
        await store.close()

    run(scenario())


def test_keys_and_values_that_are_not_utf8_are_refused_never_fatal(etcd_server):
    """Such a key used to kill the agent in the watch, and at every later start."""

    async def scenario():
        store = await configured(etcd_server.endpoint)
        client = raw_client(etcd_server.endpoint)
        start = (await store.list()).revision
        bad_key = SUBNETS.encode() + b"10.244.11.0-24\xff"
        await client.put(bad_key, b'{"PublicIP":"10.250.0.9","BackendType":"host-gw"}')
        await client.put(f"{SUBNETS}10.244.12.0-24".encode(), b'{"PublicIP":"\xff\xfe"}')
        records = []
        async for batch in store.watch(start):
            records += [change.record for change in batch]
            if len(records) >= 2:
                break
        listed = (await store.list()).records.values()
        for record in [*records, *listed]:
            assert record is not None
            if "10.244.11.0" in record.key or "10.244.12.0" in record.key:
                assert isinstance(record, InvalidRecord), record
        assert any("\\xff" in r.key for r in listed if isinstance(r, InvalidRecord))
        await client.close()
        await store.close()

    run(scenario())


def test_a_list_is_read_in_pages_at_one_revision(etcd_server, monkeypatch):
    """60,000 honest leases (8.2 MB) used to exceed gRPC's 4 MiB receive limit in one
    message, and the agent never started."""
    monkeypatch.setattr(etcd_module, "LIST_PAGE_KEYS", 7)

    async def scenario():
        store = await configured(etcd_server.endpoint)
        client = raw_client(etcd_server.endpoint)
        puts = [
            aetcd.transactions.Put(
                f"{SUBNETS}10.244.{i}.0-24".encode(),
                json.dumps({"PublicIP": f"10.250.0.{i}", "BackendType": "host-gw"}).encode(),
            )
            for i in range(1, 51)
        ]
        await client.transaction(compare=[], success=puts, failure=[])
        pages = []
        real_page = store._page

        async def counted(start, end, limit, revision):
            page = await real_page(start, end, limit, revision)
            pages.append(revision)
            if len(pages) == 2:  # a write between pages is not in this list
                await client.put(f"{SUBNETS}10.244.99.0-24".encode(), puts[0].value)
            return page

        store._page = counted
        snapshot = await store.list()
        assert len(snapshot.records) == 50
        assert len(pages) == 8 and len(set(pages[1:])) == 1 and pages[1] == snapshot.revision
        assert len((await store.list()).records) == 51
        await client.close()
        await store.close()

    run(scenario())


def test_records_near_etcds_size_limit_do_not_stop_a_list(etcd_server):
    """A few values near etcd's 1.5 MiB request limit used to make every list fail with
    "received message larger than max"; a page too large is read again smaller."""

    def receiving_at_most(store, limit):
        options = {**etcd_module.GRPC_OPTIONS, "grpc.max_receive_message_length": limit}
        host, port = etcd_module.parse_endpoint(etcd_server.endpoint)
        store.client = etcd_module.PagedClient(host=host, port=port, options=options)

    async def scenario():
        store = await configured(etcd_server.endpoint)
        await store.client.close()
        receiving_at_most(store, 4 << 20)
        client = raw_client(etcd_server.endpoint)
        padding = "x" * (1400 * 1024)
        for i in range(1, 6):
            value = {"PublicIP": f"10.250.0.{i}", "BackendType": "host-gw", "Pad": padding}
            await client.put(f"{SUBNETS}10.244.{i}.0-24".encode(), json.dumps(value).encode())
        snapshot = await store.list()  # 7 MiB: read in pages of two records
        assert len(snapshot.records) == 5
        await store.client.close()
        receiving_at_most(store, 1 << 20)
        with pytest.raises(DatastoreError, match="larger than"):
            await store.list()  # one record beyond the receive limit: one clear error
        await client.close()
        await store.close()

    run(scenario())


def test_watch_hands_over_every_event_of_one_response(etcd_server):
    async def scenario():
        store = await configured(etcd_server.endpoint)
        start = (await store.list()).revision
        client = raw_client(etcd_server.endpoint)
        puts = [
            aetcd.transactions.Put(
                f"{SUBNETS}10.244.{i}.0-24".encode(),
                b'{"PublicIP":"10.250.0.9","BackendType":"host-gw"}',
            )
            for i in range(2, 102)
        ]
        succeeded, _ = await client.transaction(compare=[], success=puts, failure=[])
        assert succeeded
        seen = []
        async for batch in store.watch(start):
            seen.extend(batch)
            if len(seen) >= 100:
                break
        assert len(seen) == 100
        assert len({c.key for c in seen}) == 100
        await client.close()
        await store.close()

    run(scenario())


def test_watch_reports_deletes_and_resumes_after_the_last_revision(etcd_server):
    async def scenario():
        store = await configured(etcd_server.endpoint)
        other = EtcdDatastore(etcd_server.endpoint)
        record = await other.claim(claim("node2", "10.250.0.2"))
        start = (await store.list()).revision
        await other.client.delete(record.key.encode())
        async for batch in store.watch(start):
            [change] = batch
            assert change.key == record.key and change.record is None
            break
        await store.close()
        await other.close()

    run(scenario())


def test_watch_from_a_compacted_revision_asks_for_a_relist(etcd_server):
    async def scenario():
        store = await configured(etcd_server.endpoint)
        old = (await store.list()).revision
        client = raw_client(etcd_server.endpoint)
        for i in range(3):
            await client.put(f"{SUBNETS}10.244.{i + 2}.0-24".encode(), b"{}")
        latest = (await store.list()).revision
        await client.compact(latest)
        with pytest.raises(HistoryCompacted):
            async for _ in store.watch(old):
                pass
        await client.close()
        await store.close()

    run(scenario())


def test_a_rewritten_own_record_is_put_back_and_reattached_to_the_lease(etcd_server):
    async def scenario():
        store = await configured(etcd_server.endpoint)
        own = await store.claim(claim("node1", "10.250.0.1"))
        client = raw_client(etcd_server.endpoint)
        written = (await client.get(own.key.encode())).value
        forged = {**json.loads(written), "PublicIP": "10.250.0.66"}
        for value in (json.dumps(forged).encode(), written):  # rewritten; detached
            await client.put(own.key.encode(), value)
            seen = (await store.list()).records[own.key]
            assert not store.own_record_intact(seen)
            assert await store.restore() == own
            stored = await client.get(own.key.encode())
            assert stored.value == written and stored.lease == store._lease_id != 0
            assert store.own_record_intact((await store.list()).records[own.key])
        await client.put(own.key.encode(), json.dumps(forged).encode())
        await store.renew()  # the periodic renewal looks too
        assert (await client.get(own.key.encode())).value == written
        await client.close()
        await store.close()

    run(scenario())


def test_subnets_are_handed_out_next_fit_across_the_cluster(etcd_server):
    """A subnet freed by a node that left is not handed out again while never-used ones
    remain, whichever process claims next (each used to start from its own view)."""

    async def scenario():
        first = await configured(etcd_server.endpoint, cidrs=[ip_network("10.244.0.0/21")])
        client = raw_client(etcd_server.endpoint)
        claimed = []
        for i in range(1, 4):
            store = EtcdDatastore(etcd_server.endpoint)
            claimed.append(await store.claim(claim(f"node{i}", f"10.250.0.{i}")))
            await store.close()
        assert [r.subnets[0] for r in claimed] == [
            ip_network(f"10.244.{i}.0/24") for i in (1, 2, 3)
        ]
        # node3 left long ago: its record and its hold are gone
        await client.delete(claimed[2].key.encode())
        await client.delete(b"/coreos.com/network/plainnet/held/10.244.3.0-24")
        fresh = EtcdDatastore(etcd_server.endpoint)
        fourth = await fresh.claim(claim("node4", "10.250.0.4"))
        assert fourth.subnets == (ip_network("10.244.4.0/24"),)  # not node3's 10.244.3.0
        await fresh.close()
        await first.close()
        await client.close()

    run(scenario())


def test_an_expired_subnet_is_held_for_one_more_ttl(etcd_server):
    """A node paused past its lease TTL used to find its subnet taken within a second
    of the expiry (and both then hold pods in one subnet)."""

    async def scenario():
        tiny = [ip_network("10.244.0.0/23")]  # two /24s: the first is never handed out
        paused = await configured(etcd_server.endpoint, cidrs=tiny, ttl=2)
        mine = await paused.claim(claim("node1", "10.250.0.1"))
        paused.client = etcd_module.etcd_client(etcd_server.endpoint)  # drop, don't revoke
        client = raw_client(etcd_server.endpoint)
        deadline = asyncio.get_running_loop().time() + 10
        while await client.get(mine.key.encode()) is not None:  # the record expires
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.2)
        other = EtcdDatastore(etcd_server.endpoint, ttl_seconds=2)
        with pytest.raises(DatastoreError, match="no subnet"):
            await other.claim(claim("node2", "10.250.0.2"))  # held for node1
        # node1 resumes within the hold: its subnet is still there for it
        again = EtcdDatastore(etcd_server.endpoint, ttl_seconds=2)
        back = await again.claim(claim("node1", "10.250.0.1", previous=mine.subnets))
        assert back.subnets == mine.subnets
        await again.close()
        await other.close()
        await client.close()

    run(scenario())


def test_an_expired_lease_disappears_and_renew_keeps_it(etcd_server):
    async def scenario():
        await configured(etcd_server.endpoint)
        kept = EtcdDatastore(etcd_server.endpoint, ttl_seconds=5)
        lost = EtcdDatastore(etcd_server.endpoint, ttl_seconds=5)
        kept_record = await kept.claim(claim("kept", "10.250.0.3"))
        lost_record = await lost.claim(claim("lost", "10.250.0.4"))
        for _ in range(4):
            await asyncio.sleep(2)
            await kept.renew()
        keys = set((await kept.list()).records)
        assert kept_record.key in keys
        assert lost_record.key not in keys
        await kept.close()
        await lost.close()

    run(scenario())
