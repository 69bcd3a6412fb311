"""The compiled ruleset into the kernel, and the drop counters out of it."""

from __future__ import annotations

from plainnet import nft
from plainnet.policy.compiler import FAMILY, TABLE, CompiledRuleset


def apply(ruleset: CompiledRuleset) -> None:
    """Replace the table whole, in one transaction: no packet ever meets half a
    ruleset, and the other tables (masquerade, kube-proxy's, the user's) are untouched.
    :class:`~plainnet.nft.NftError` if nft refuses it (the old table then stays)."""
    run(ruleset.text, whole=True)


def run(script: str, whole: bool) -> None:
    """A script of :mod:`~plainnet.policy.compiler`'s: the whole table, or the change
    from the last one (:func:`~plainnet.policy.compiler.update_script`)."""
    nft.run_script(script, "the network policy table" + ("" if whole else " update"))


def remove() -> bool:
    """Delete the table; returns whether there was one."""
    return nft.delete_table(FAMILY, TABLE)


def dropped_packets() -> dict[str, int]:
    """Packets dropped so far, by pod chain (``in-<n>``, ``eg-<n>``)."""
    return nft.counters(FAMILY, TABLE)
