"""Events on Nodes, once per node and reason: what an operator sees in ``kubectl
describe node`` when a controller cannot serve that node."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from lightkube import AsyncClient
from lightkube.models.core_v1 import ObjectReference
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event

from plainnet.controllers import API_ERRORS
from plainnet.text import printable

log = logging.getLogger("plainnet.controllers.events")


class NodeEvents:
    """Warning Events from ``component``; each (node, reason) is recorded once, until
    :meth:`forget` (the problem went away, so a return is news again)."""

    def __init__(self, client: AsyncClient, component: str) -> None:
        self.client = client
        self.component = component
        self.reported: set[tuple[str, str]] = set()

    def forget(self, node: str, reason: str | None = None) -> None:
        self.reported = {
            (n, r) for n, r in self.reported if n != node or (reason is not None and r != reason)
        }

    async def warn(self, node: str, reason: str, message: str, uid: str | None = None) -> None:
        if (node, reason) in self.reported:
            return
        self.reported.add((node, reason))
        log.warning("node %s: %s: %s", printable(node), reason, printable(message))
        now = datetime.now(UTC)
        try:
            await self.client.create(
                Event(
                    metadata=ObjectMeta(generateName=f"{node}.", namespace="default"),
                    involvedObject=ObjectReference(kind="Node", name=node, uid=uid or node),
                    reason=reason,
                    message=message,
                    type="Warning",
                    source={"component": self.component},  # type: ignore[arg-type]
                    firstTimestamp=now,
                    lastTimestamp=now,
                    count=1,
                )
            )
        except API_ERRORS as exc:
            log.warning("could not record event for node %s: %s", printable(node), exc)
