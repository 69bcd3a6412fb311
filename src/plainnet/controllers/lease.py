"""A Lease-based leader lock (the ``coordination.k8s.io`` object kube-controller-manager
uses): taken and renewed with optimistic concurrency (resourceVersion), so two replicas
never both act; one that cannot renew in time gives it up."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease

from plainnet.controllers import API_ERRORS, NAMESPACE

log = logging.getLogger("plainnet.controllers.lease")


class LeaderLease:
    """A Lease-based leader lock (the same object kube-controller-manager uses)."""

    def __init__(self, client: AsyncClient, name: str, identity: str, duration: int = 15) -> None:
        self.client = client
        self.name = name
        self.identity = identity
        self.duration = duration

    async def acquire(self) -> None:
        while not await self._try():
            await asyncio.sleep(self.duration / 3)
        log.info("leading as %s", self.identity)

    async def keep(self) -> None:
        """Renew until the lease is lost, or could not be renewed for as long as it
        lasts; then return (the caller stops acting)."""
        last_renewed = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(self.duration / 3)
            if await self._try():
                last_renewed = asyncio.get_running_loop().time()
            elif asyncio.get_running_loop().time() - last_renewed >= self.duration * 2 / 3:
                log.warning("lost the leader lease")
                return

    async def _try(self) -> bool:
        """Take or renew the lease; False if another replica holds it or the API server
        could not be asked."""
        try:
            return await self._try_once()
        except API_ERRORS as exc:
            log.warning("leader lease: %s", exc)
            return False

    async def _try_once(self) -> bool:
        now = datetime.now(UTC)
        try:
            lease = await self.client.get(Lease, self.name, namespace=NAMESPACE)
        except ApiError as exc:
            if exc.status.code != 404:
                raise
            try:
                await self.client.create(
                    Lease(
                        metadata=ObjectMeta(name=self.name, namespace=NAMESPACE),
                        spec=LeaseSpec(
                            holderIdentity=self.identity,
                            leaseDurationSeconds=self.duration,
                            acquireTime=now,
                            renewTime=now,
                        ),
                    )
                )
                return True
            except ApiError:
                return False
        spec = lease.spec
        renewed = spec.renewTime if spec and spec.renewTime else None
        expired = renewed is None or (now - renewed).total_seconds() > (
            spec.leaseDurationSeconds or self.duration
        )
        if spec and spec.holderIdentity not in (None, self.identity) and not expired:
            return False
        lease.spec = LeaseSpec(
            holderIdentity=self.identity,
            leaseDurationSeconds=self.duration,
            acquireTime=spec.acquireTime if spec else now,
            renewTime=now,
        )
        try:
            await self.client.replace(lease)  # carries resourceVersion: loses races cleanly
            return True
        except ApiError:
            return False
