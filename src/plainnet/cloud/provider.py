"""The cloud side of ``plainnet cloud-routes``: what a provider must do. Shaped after
the cloud-provider ``Routes`` interface (list, create, delete named routes) so GCE and
Azure fit later; only AWS (:mod:`plainnet.cloud.aws`) exists now."""

from __future__ import annotations

from typing import Protocol

from plainnet.cloud.plan import CloudState, RouteChange


class CloudError(Exception):
    """A cloud API call failed. ``code`` is the API's error code (``RequestLimitExceeded``,
    ``RouteLimitExceeded``, ``UnauthorizedOperation``, ...) or ``"Unreachable"``."""

    def __init__(self, operation: str, code: str, message: str) -> None:
        super().__init__(f"{operation}: {code}: {message}")
        self.operation = operation
        self.code = code
        self.message = message

    @property
    def throttled(self) -> bool:
        return self.code in THROTTLED

    @property
    def transient(self) -> bool:
        """Worth retrying the whole pass later (throttling, the API away)."""
        return self.throttled or self.code in ("Unreachable", "InternalError", "Unavailable")


THROTTLED = frozenset({"RequestLimitExceeded", "Throttling", "ThrottlingException"})
#: The table cannot take another route: its real limit is lower than the setting.
ROUTE_LIMIT_EXCEEDED = "RouteLimitExceeded"


class RouteProvider(Protocol):
    def state(self) -> CloudState:
        """The cluster's route tables and the VPC's instances: a fixed, small number of
        list calls however many nodes there are."""
        ...

    def apply(self, change: RouteChange) -> None:
        """Create, replace or delete one route; :class:`CloudError` if refused.
        Idempotent: a create of an existing route replaces it, a delete of a missing
        one succeeds."""
        ...

    def disable_source_dest_check(self, instance: str) -> None:
        """Let the instance send and receive packets not addressed to itself (pods')."""
        ...
