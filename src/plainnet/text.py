"""Text from outside (a peer's record, a runtime's request) made safe for one log line."""

from __future__ import annotations

#: The longest piece of outside text a log line carries.
LOG_LIMIT = 200


def printable(text: str, limit: int = LOG_LIMIT) -> str:
    """``text`` safe for one log line: non-printable characters escaped (a newline
    cannot forge a line), undecodable bytes shown as escapes, capped at ``limit``."""
    escaped = text.encode("unicode_escape", "backslashreplace").decode("ascii")
    if len(escaped) > limit:
        return f"{escaped[:limit]}... ({len(escaped)} characters)"
    return escaped
