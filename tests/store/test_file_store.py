"""The file-backed pod address store: persistence, crash safety, many processes."""

import json
import os
import signal
import subprocess
import sys
import time
from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest

from plainnet.ipam.file_store import FilePodAddressStore, StoreCorruptError
from plainnet.ipam.pod_addresses import PodAddressAllocator

REPO = Path(__file__).resolve().parents[2]


def allocator(directory: Path, subnet: str = "10.244.7.0/24") -> PodAddressAllocator:
    return PodAddressAllocator(ip_network(subnet), FilePodAddressStore(directory))


def test_state_survives_a_new_store_object(tmp_path):
    first = allocator(tmp_path).allocate("c1", "eth0")
    again = allocator(tmp_path)
    assert again.allocate("c1", "eth0") == first  # idempotent across processes/restarts
    assert again.allocate("c2", "eth0") == first + 1  # continues after the last one


def test_records_name_container_and_interface(tmp_path):
    allocator(tmp_path).allocate("abc123", "net1")
    document = json.loads((tmp_path / "reservations.json").read_text())
    assert document["reservations"] == {
        "10.244.7.2": {"container_id": "abc123", "ifname": "net1", "network": "plainnet"}
    }
    assert document["last_reserved"] == "10.244.7.2"


def test_a_leftover_temporary_file_is_harmless(tmp_path):
    pods = allocator(tmp_path)
    pods.allocate("c1", "eth0")
    (tmp_path / "reservations.json.tmp").write_text('{"half": ')  # a writer killed mid-write
    assert pods.allocate("c2", "eth0") == ip_address("10.244.7.3")
    assert len(pods.reservations()) == 2


def test_a_corrupt_state_file_is_reported_in_one_line(tmp_path):
    (tmp_path / "reservations.json").write_text("not json")
    with pytest.raises(StoreCorruptError, match=r"reservations\.json is unreadable") as caught:
        allocator(tmp_path).allocate("c1", "eth0")
    assert "\n" not in str(caught.value)


def test_read_only_calls_do_not_rewrite_the_file(tmp_path):
    pods = allocator(tmp_path)
    pods.allocate("c1", "eth0")
    before = (tmp_path / "reservations.json").stat().st_mtime_ns
    time.sleep(0.01)
    pods.reservations()
    pods.release("unknown")
    assert (tmp_path / "reservations.json").stat().st_mtime_ns == before


def _worker(directory: Path, subnet: str, worker: str, count: int, *extra: str):
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.helpers.pod_address_worker",
            str(directory),
            subnet,
            worker,
            str(count),
            *extra,
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_eight_processes_never_share_an_address_and_a_kill_9_breaks_nothing(tmp_path):
    subnet = "10.96.0.0/20"
    per_worker = 150
    churner = _worker(tmp_path, subnet, "victim", 0, "--churn")
    workers = [_worker(tmp_path, subnet, f"w{i}", per_worker) for i in range(8)]
    time.sleep(0.5)  # the churner is now allocating and releasing in a tight loop
    os.kill(churner.pid, signal.SIGKILL)
    churner.wait()
    handed_out: dict[str, str] = {}
    for worker in workers:
        out, _ = worker.communicate(timeout=120)
        assert worker.returncode == 0
        for line in out.splitlines():
            address, container = line.split()
            assert address not in handed_out, f"{address} given twice: {container}"
            handed_out[address] = container
    assert len(handed_out) == 8 * per_worker

    pods = allocator(tmp_path, subnet)  # the store is still readable after the kill
    recorded = {str(r.address): r.owner.container_id for r in pods.reservations()}
    for address, container in handed_out.items():
        assert recorded[address] == container
    leftovers = set(recorded) - set(handed_out)
    assert all(recorded[a].startswith("victim-") for a in leftovers)  # at most its last one
    assert len(leftovers) <= 1
    # GC removes what the killed process held; then the next allocation just works
    pods.garbage_collect({(c, "eth0") for c in handed_out.values()})
    assert set(str(r.address) for r in pods.reservations()) == set(handed_out)
    assert str(pods.allocate("after", "eth0")) not in handed_out


def test_kill_9_at_random_instants_never_corrupts_the_state(tmp_path):
    subnet = "10.97.0.0/24"
    for delay in (0.05, 0.11, 0.17, 0.23, 0.29):
        victim = _worker(tmp_path, subnet, "victim", 0, "--churn")
        time.sleep(delay + 0.25)  # interpreter start-up, then churn for `delay`
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        pods = allocator(tmp_path, subnet)
        pods.reservations()  # must parse
        pods.garbage_collect(set())
    assert allocator(tmp_path, subnet).reservations() == []


def test_concurrent_changes_share_commits_and_a_failing_one_fails_alone(tmp_path, monkeypatch):
    """50 concurrent ADDs were 50 fsynced commits in a row on one lock."""
    import threading

    from plainnet.ipam.errors import AddressExhaustedError

    writes = []
    original = FilePodAddressStore._write_atomically

    def counted(self, text):
        writes.append(text)
        time.sleep(0.01)  # an fsync's worth: the others queue up meanwhile
        original(self, text)

    monkeypatch.setattr(FilePodAddressStore, "_write_atomically", counted)
    pool = allocator(tmp_path, "10.244.9.0/26")  # 61 pod addresses
    got, failed = {}, []
    start = threading.Barrier(70)

    def add(index):
        start.wait()
        try:
            got[index] = pool.allocate(f"c{index}", "eth0")
        except AddressExhaustedError:
            failed.append(index)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(70)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 61 and len(set(got.values())) == 61 and len(failed) == 9
    assert len(writes) < 30, f"{len(writes)} commits for 70 changes"
    again = allocator(tmp_path, "10.244.9.0/26")  # a new store object: all on disk
    assert {r.owner.container_id for r in again.reservations()} == {f"c{i}" for i in got}


def test_an_interrupted_commit_leaves_the_store_usable(tmp_path):
    store = FilePodAddressStore(tmp_path)

    def interrupted(state):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.run(interrupted)
    assert allocator(tmp_path).allocate("c1", "eth0") == ip_address("10.244.7.2")
