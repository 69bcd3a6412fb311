"""Shared test set-up. The lab fixtures (``lab``, ``lab_factory``, ``lab_name``) come from
plainnet's own pytest plugin, :mod:`plainnet.testing.pytest_plugin`."""

pytest_plugins = ["pytester"]


import pytest  # noqa: E402

from plainnet.testing.etcd_server import EtcdServer  # noqa: E402


@pytest.fixture
def etcd_server():
    """A real etcd (Debian's etcd-server) on loopback, removed after the test."""
    with EtcdServer() as server:
        yield server
