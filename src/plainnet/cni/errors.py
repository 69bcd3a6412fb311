"""CNI errors, with the spec's well-known codes."""

from __future__ import annotations

import json

# Codes from the CNI specification ("Error" section).
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENVIRONMENT = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_NETWORK_CONFIG = 7
TRY_AGAIN_LATER = 11
PLUGIN_NOT_AVAILABLE = 50
# plainnet's own (100 and up are plugin-specific).
CHECK_FAILED = 100
SETUP_FAILED = 101


class CniError(Exception):
    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_json(self, cni_version: str) -> bytes:
        document = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            document["details"] = self.details
        return json.dumps(document).encode() + b"\n"
