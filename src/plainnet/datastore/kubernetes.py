"""The Kubernetes datastore: peer records are Node objects.

A node's pod subnets are ``spec.podCIDRs`` (or ``spec.podCIDR``), set by
``kube-controller-manager --allocate-node-cidrs`` or by ``plainnet allocator``; its
addresses are the ``InternalIP`` entries of ``status.addresses``. host-gw needs nothing
else, and vxlan derives each node's VTEP MAC from its address
(:func:`plainnet.agent.backends.vxlan.derived_mac`), so the agent only reads Nodes
(``deploy/rbac.yaml``): it never writes.

Client library: **lightkube** (on httpx2; typed models; in-cluster config, kubeconfig).
Compared with kubernetes_asyncio, the asyncio build of the official client: lightkube
imports in ~0.09 s and a few MB, the official client in ~0.27 s and ~70 MB — on every
node of the cluster. lightkube's public watch cannot ask for bookmarks and restarts
silently after 410 Gone, so this module builds the watch request with lightkube's
request builder, adds ``allowWatchBookmarks``, and turns 410 into
:class:`HistoryCompacted`, on which the agent relists (level-triggered: a relist is a
full reconcile, so no change can be missed). Bookmarks keep the resume point fresh in
a quiet cluster, so a reconnect resumes instead of relisting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import httpx2 as httpx  # lightkube 1.x runs on httpx2
from lightkube import AsyncClient, KubeConfig
from lightkube.core.exceptions import ApiError
from lightkube.resources.core_v1 import Node

from plainnet.datastore.kube_nodes import created_at, internal_ips, pod_cidrs
from plainnet.datastore.records import (
    Change,
    ClusterNetwork,
    DatastoreError,
    HistoryCompacted,
    InvalidRecord,
    NodeClaim,
    PeerRecord,
    Record,
    Snapshot,
)
from plainnet.ipam.types import IPAddress

log = logging.getLogger("plainnet.datastore.kubernetes")

WATCH_SECONDS = 300


def load_kube_config(kubeconfig: Path | None) -> KubeConfig:
    """Credentials from a kubeconfig file, else in-cluster (service account) or
    $KUBECONFIG; a clear error when there are none."""
    try:
        return KubeConfig.from_file(str(kubeconfig)) if kubeconfig else KubeConfig.from_env()
    except Exception as exc:  # lightkube raises several kinds here
        raise DatastoreError(
            f"no Kubernetes credentials ({exc}): pass --kubeconfig or run in a pod"
        ) from None


def node_record(node: Any, record_type: str) -> Record | None:
    """A Node as a peer record; None for a Node that has no pod subnet yet — it is
    pending (the allocator has not reached it), not a bad record."""
    name = node.metadata.name
    claimed_at = int(created_at(node))
    try:
        cidrs = pod_cidrs(node)
        if not cidrs:
            return None
        return PeerRecord(
            key=name,
            node=name,
            subnets=tuple(ip_network(c) for c in cidrs),
            addresses=tuple(ip_address(a) for a in internal_ips(node)),
            backend=record_type,
            claimed_at=claimed_at,
        )
    except (ValueError, TypeError, AttributeError) as exc:
        return InvalidRecord(name, str(exc), claimed_at)


class KubernetesDatastore:
    def __init__(
        self,
        node_name: str,
        network: ClusterNetwork,
        record_type: str,
        kubeconfig: Path | None = None,
    ) -> None:
        """``network``: from the agent's flags (the DaemonSet's ConfigMap), what the etcd
        datastore reads from ``<prefix>/config``. ``record_type``: every node runs the
        cluster's backend, and Node objects do not say which."""
        self.node_name = node_name
        self.network = network
        self.record_type = record_type
        self._claim: NodeClaim | None = None
        self.client = AsyncClient(
            config=load_kube_config(kubeconfig), timeout=httpx.Timeout(10, read=None)
        )

    async def network_config(self) -> ClusterNetwork:
        return self.network

    async def close(self) -> None:
        await self.client.close()

    async def _own_node(self) -> Any | None:
        """This node's Node, or None while it is not registered; DatastoreError when the
        API server does not answer or refuses."""
        try:
            return await self.client.get(Node, name=self.node_name)
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise DatastoreError(
                f"Kubernetes API: cannot read node {self.node_name}: {exc}"
            ) from None
        except httpx.HTTPError as exc:
            raise DatastoreError(f"Kubernetes API unreachable: {exc}") from None

    async def node_addresses(self) -> tuple[IPAddress, ...]:
        node = await self._own_node()  # None: not registered yet, the claim waits for it
        addresses = []
        for text in internal_ips(node) if node is not None else ():
            with contextlib.suppress(ValueError):  # a bad InternalIP is not ours to use
                addresses.append(ip_address(text))
        return tuple(addresses)

    def claim_snapshot(self) -> Snapshot | None:
        return None

    def own_record_intact(self, record: Record) -> bool:
        return True

    async def ping(self) -> None:
        await self._own_node()  # a Node not registered yet is an answer too

    async def list(self) -> Snapshot:
        try:
            nodes = self.client.list(Node)
            records = {}
            async for node in nodes:
                record = node_record(node, self.record_type)
                if record is not None:
                    records[record.key] = record
            return Snapshot(records, int(nodes.resourceVersion))
        except (ApiError, httpx.HTTPError) as exc:
            raise DatastoreError(f"Kubernetes API: listing nodes failed: {exc}") from None

    async def watch(self, after: int) -> AsyncIterator[list[Change]]:
        generic = self.client._client  # lightkube's request builder (see module doc)
        request = generic.prepare_request(
            "list",
            Node,
            watch=True,
            params={
                "resourceVersion": str(after),
                "allowWatchBookmarks": "true",
                "timeoutSeconds": WATCH_SECONDS,
            },
        )
        try:
            async for kind, node in generic.watch(request):
                revision = int(node.metadata.resourceVersion)
                if kind == "BOOKMARK":
                    yield [Change(None, None, revision)]
                elif kind == "DELETED":
                    yield [Change(node.metadata.name, None, revision)]
                else:
                    yield [
                        Change(node.metadata.name, node_record(node, self.record_type), revision)
                    ]
        except ApiError as exc:
            if exc.status.code == 410:
                raise HistoryCompacted(f"resourceVersion {after} is gone") from None
            raise DatastoreError(f"Kubernetes API: watching nodes failed: {exc}") from None
        except httpx.HTTPError as exc:
            raise DatastoreError(f"Kubernetes API: watch of nodes broke: {exc}") from None
        raise DatastoreError("Kubernetes API: watch ended; resuming")

    async def claim(self, claim: NodeClaim) -> PeerRecord:
        """This node's Node, once it has a pod subnet (assigned by kube-controller-manager
        or plainnet allocator); the agent waits for it."""
        self._claim = claim
        waited = 0.0
        while True:
            node = await self._own_node()
            if node is None:  # retried by the caller, as any datastore error
                raise DatastoreError(
                    f"Kubernetes API: cannot read node {self.node_name}: not registered"
                )
            record = node_record(node, self.record_type)
            if isinstance(record, PeerRecord):
                if not record.addresses:
                    record = PeerRecord(
                        record.key,
                        record.node,
                        record.subnets,
                        claim.addresses,
                        record.backend,
                        claimed_at=record.claimed_at,
                    )
                return record
            if waited % 10 == 0:
                log.info("node %s has no podCIDR yet; waiting for the allocator", self.node_name)
            await asyncio.sleep(0.5)
            waited += 0.5

    async def renew(self) -> None:
        """Nothing to renew: a Node lives as long as the node is in the cluster."""

    async def restore(self) -> PeerRecord:
        """The agent cannot create a Node (it only reads them): wait until the kubelet
        has registered it again and it has a podCIDR."""
        if self._claim is None:
            raise DatastoreError("restore before claim")
        log.warning("node %s was deleted; waiting for it to be registered again", self.node_name)
        return await self.claim(self._claim)
