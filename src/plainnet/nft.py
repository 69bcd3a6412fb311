"""The nftables adapter: a script applied as one atomic transaction, a table removed,
a table's named counters read — each with the ``nft`` tool.

``nft -f -`` rather than libnftables through Debian's ``python3-nftables``: that
binding is not on PyPI, so the agent's venv (and the image's) would need the system's
site-packages for it; and the tool runs the same library in a process of its own, so
a malformed script or a library crash costs one failed apply, never the agent. What
it costs is a process per apply (~5 ms), which is nothing next to the rulesets'
build time, and applies are rare (a changed policy, pod or namespace, batched).
"""

from __future__ import annotations

import json
import subprocess

NFT = "/usr/sbin/nft"
TIMEOUT_SECONDS = 60


class NftError(Exception):
    """nft refused a script; the message carries its words."""


def run_script(script: str, what: str) -> None:
    """Apply ``script`` atomically (all of it or none of it)."""
    try:
        result = subprocess.run(
            [NFT, "-f", "-"], input=script, text=True, capture_output=True, timeout=TIMEOUT_SECONDS
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NftError(f"could not install {what}: {exc}") from None
    if result.returncode != 0:
        raise NftError(f"could not install {what}: {result.stderr.strip()[:2000]}")


def delete_table(family: str, name: str) -> bool:
    """Delete one table; returns whether there was one (False also where there is no
    nft at all: then there is no table either)."""
    try:
        result = subprocess.run(
            [NFT, "delete", "table", family, name], capture_output=True, timeout=TIMEOUT_SECONDS
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def counters(family: str, table: str) -> dict[str, int]:
    """The packets of each named counter in the table (none if there is no table)."""
    found = {}
    for item in (listing("counters", "table", family, table) or {}).get("nftables", []):
        counter = item.get("counter") if isinstance(item, dict) else None
        if isinstance(counter, dict) and counter.get("table") == table:
            found[str(counter["name"])] = int(counter.get("packets", 0))
    return found


def ruleset_json() -> dict | None:
    """The whole ruleset (``plainnet doctor`` reads the forward chains from it)."""
    return listing("ruleset")


def listing(*what: str) -> dict | None:
    """``nft -j list WHAT...`` as JSON, or None where nft is missing or refuses."""
    try:
        result = subprocess.run(
            [NFT, "-j", "list", *what], capture_output=True, text=True, timeout=TIMEOUT_SECONDS
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    try:
        document = json.loads(result.stdout)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None
