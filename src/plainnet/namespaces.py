"""Entering network namespaces from Python: the ``setns(2)`` system call.

Python 3.11's ``os`` has no ``setns``, so it is called through libc. ``setns`` moves
only the calling *thread*; :func:`thread_in_namespace` uses that to create netlink or
other sockets inside another namespace (a pod's, a lab host's) without forking: a
socket keeps the namespace it was created in.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Iterator
from contextlib import contextmanager

CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def setns(fd: int) -> None:
    """Move the calling thread into the network namespace open at ``fd``."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


@contextmanager
def thread_in_namespace(path: str | os.PathLike[str]) -> Iterator[None]:
    """Run the block with this thread inside the namespace at ``path``; back afterwards."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            setns(target)
            try:
                yield
            finally:
                setns(home)
        finally:
            os.close(target)
    finally:
        os.close(home)
