"""pytest fixtures that build labs and always tear them down.

Registered as a pytest plugin through the ``pytest11`` entry point, so any test suite
with plainnet installed can use them:

- ``lab_name``: a lab name unique to this test run (``t<pid>x<n>``).
- ``lab_factory``: ``lab_factory(topology)`` builds a lab; every lab it built is torn
  down when the test ends, whether it passed, failed or errored.
- ``lab``: a ready lab of three hosts on one segment.
- ``cluster_factory``: ``cluster_factory(name, nodes=4, ...)`` builds a lab cluster
  (etcd, an agent process per node, pods), torn down like the labs.

A session finalizer also removes any lab whose name this run generated, as a last line
of defence should a test process be interrupted between build and teardown.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from plainnet.lab.builder import Lab, remove_lab, running_labs
from plainnet.lab.cluster import ClusterSpec, LabCluster
from plainnet.lab.topology import Topology, single_segment

_counter = itertools.count(1)


def _run_prefix() -> str:
    return f"t{os.getpid() % 100000}x"


@pytest.fixture
def lab_name() -> str:
    return f"{_run_prefix()}{next(_counter)}"


def _torn_down_after_the_test(make: Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    """Yield a builder that remembers what it built and tears all of it down, newest
    first, when the test ends — passed, failed or errored."""
    if os.geteuid() != 0:
        pytest.skip("lab tests create network namespaces and need root")
    built: list[Any] = []

    def build(*args: Any, **kwargs: Any) -> Any:
        thing = make(*args, **kwargs)
        built.append(thing)
        return thing.up()

    yield build
    for thing in reversed(built):
        thing.down()


@pytest.fixture
def lab_factory() -> Iterator[Callable[[Topology], Lab]]:
    yield from _torn_down_after_the_test(Lab)


@pytest.fixture
def cluster_factory() -> Iterator[Callable[..., LabCluster]]:
    """``cluster_factory(name, nodes=..., ...)`` builds a lab cluster (etcd, agents, pods)."""
    yield from _torn_down_after_the_test(
        lambda name, **spec: LabCluster(ClusterSpec(name=name, **spec))
    )


@pytest.fixture
def lab(lab_factory: Callable[[Topology], Lab], lab_name: str) -> Lab:
    return lab_factory(single_segment(lab_name, 3))


@pytest.fixture(scope="session", autouse=True)
def _remove_labs_of_this_run() -> Iterator[None]:
    yield
    if os.geteuid() != 0:
        return
    prefix = _run_prefix()
    for name in running_labs():
        if name.startswith(prefix) and name[len(prefix) :].isdigit():
            remove_lab(name)
