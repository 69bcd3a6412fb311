"""What plainnet's cluster controllers share: the leader Lease, Events on Nodes, and the
errors an API call can end with. Used by ``plainnet allocator`` and ``plainnet
cloud-routes``."""

from __future__ import annotations

import httpx2 as httpx  # lightkube 1.x runs on httpx2
from lightkube.core.exceptions import ApiError

#: What a failed API call can raise: the API's answer, or no answer at all.
API_ERRORS: tuple[type[BaseException], ...] = (ApiError, httpx.HTTPError, OSError)
NAMESPACE = "kube-system"
