"""Network namespaces: create, remove, enter, run code and processes inside them.

Named namespaces are bind mounts under ``/run/netns``, the convention ``ip netns``
uses, so ``ip -n pn-demo-host1 ...`` works on everything a lab builds. Creation and
removal go through pyroute2; entering one is the ``setns(2)`` system call, made through
libc because Python 3.11's ``os`` module has no ``setns``.

Sysctls such as ``net.ipv4.ip_forward`` are per namespace, and the kernel resolves
``/proc/sys/net`` by the namespace of the process that opens it. Writing one from this
process would change the machine's own setting, so :func:`write_sysctls` forks a
child that enters the namespace first.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pyroute2.config
from pyroute2 import netns as pyroute2_netns

from plainnet.errors import PlainnetError
from plainnet.namespaces import setns, thread_in_namespace

NETNS_DIR = Path("/run/netns")

# pyroute2 makes a namespace in a helper process and gives it 2 s to answer: on a
# loaded 2-core machine (a namespace with 65,536 routes being freed) that is too short.
pyroute2.config.default_communicate_timeout = 30


def path_of(name: str) -> Path:
    return NETNS_DIR / name


def exists(name: str) -> bool:
    return path_of(name).exists()


def list_namespaces(prefix: str = "") -> list[str]:
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    return sorted(name for name in names if name.startswith(prefix))


def create(name: str) -> None:
    if exists(name):
        raise PlainnetError(f"network namespace {name} already exists")
    pyroute2_netns.create(name)


def remove(name: str) -> None:
    """Unmount and delete a named namespace; the kernel frees it (and the veths in it)
    once no process is left inside."""
    if exists(name):
        pyroute2_netns.remove(name)


def enter(name: str) -> None:
    """Move this process into namespace ``name`` (before an ``exec``)."""
    fd = _open(name)
    try:
        setns(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def entering(name: str) -> Iterator[Callable[[], None]]:
    """A ``preexec_fn`` for :mod:`subprocess` that starts the child inside ``name``.
    The namespace is opened here, in the parent, so the child between fork and exec
    makes a single system call; the fd is closed when the block ends."""
    fd = _open(name)
    try:
        yield lambda: setns(fd)
    finally:
        os.close(fd)


def socket_in(
    name: str, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM, proto: int = 0
) -> socket.socket:
    """A socket that lives in namespace ``name``, usable from this process. A socket
    keeps the namespace it was created in, so the calling thread enters ``name`` only
    for the ``socket()`` call and returns at once."""
    if not exists(name):
        raise PlainnetError(f"network namespace {name} does not exist")
    with thread_in_namespace(path_of(name)):
        return socket.socket(family, kind, proto)


def write_sysctls(name: str, values: dict[str, str]) -> None:
    """Write ``/proc/sys`` keys (``net/ipv4/ip_forward`` style) inside namespace ``name``."""
    fd = _open(name)
    try:
        pid = os.fork()
        if pid == 0:  # child: enter, write, leave without running any Python cleanup
            status = 0
            try:
                setns(fd)
                for key, value in values.items():
                    Path("/proc/sys", key).write_text(value)
            except BaseException:
                status = 1
            os._exit(status)
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    if os.waitstatus_to_exitcode(status) != 0:
        raise PlainnetError(f"could not set sysctls {sorted(values)} in namespace {name}")


def pids_inside(name: str) -> list[int]:
    """Processes whose network namespace is ``name`` (found by the namespace's inode)."""
    try:
        target = path_of(name).stat()
    except FileNotFoundError:
        return []
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ns = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        if (ns.st_dev, ns.st_ino) == (target.st_dev, target.st_ino):
            found.append(int(entry))
    return found


def stop_processes(pids: Iterable[int], grace_seconds: float = 3.0) -> None:
    """SIGTERM the given processes, then SIGKILL whatever still runs after the grace time.
    Only ever called with PIDs found inside namespaces a lab created, or recorded by
    the lab when it started them."""
    pending = set(pids) - {os.getpid()}
    for pid in pending:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while pending and time.monotonic() < deadline:
        pending = {pid for pid in pending if _alive(pid)}
        if pending:
            time.sleep(0.05)
    for pid in pending:
        _signal(pid, signal.SIGKILL)


def terminate(process: subprocess.Popen[Any] | None, grace_seconds: float = 10.0) -> None:
    """Stop a child this lab started: SIGTERM, then SIGKILL after the grace time."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def ping(namespace: str, address: object, *, count: int = 1, wait: float = 1) -> bool:
    """Whether ``ping`` run inside ``namespace`` gets an ICMP echo reply from ``address``."""
    with entering(namespace) as preexec:
        result = subprocess.run(
            ["ping", "-n", "-q", "-c", str(count), "-W", str(wait), str(address)],
            preexec_fn=preexec,
            capture_output=True,
            timeout=count * wait + 5,
        )
    return result.returncode == 0


def _open(name: str) -> int:
    try:
        return os.open(path_of(name), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise PlainnetError(f"network namespace {name} does not exist") from None


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)  # reap our own children
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie that is not our child still answers kill(0); it no longer runs
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
