"""A real kube-apiserver (built once per machine by scripts/build-kube.sh) on a real
etcd, with TLS, token auth and RBAC, shared by the tests of this folder."""

import pytest

from plainnet.testing.etcd_server import EtcdServer
from plainnet.testing.kube_control_plane import KubeControlPlane


@pytest.fixture(scope="module")
def kube():
    with EtcdServer() as etcd, KubeControlPlane(etcd.endpoint) as control_plane:
        yield control_plane
