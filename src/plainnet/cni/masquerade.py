"""Masquerade pod traffic that leaves the cluster CIDR, never pod-to-pod traffic.

One nftables table of plainnet's own (``inet plainnet``), written as one atomic
transaction with the ``nft`` tool: create-if-missing, flush, fill. Running it again
yields the same ruleset, so it is safe on every ADD; the server runs it once per set
of cluster CIDRs. Other tables (kube-proxy's, the portmap plugin's) are not touched.
"""

from __future__ import annotations

from plainnet import nft
from plainnet.ipam.types import IPNetwork

TABLE = "plainnet"


def ruleset(cluster_cidrs: list[IPNetwork]) -> str:
    rules = []
    for cidr in cluster_cidrs:
        family = "ip" if cidr.version == 4 else "ip6"
        rules.append(f"        {family} saddr {cidr} {family} daddr != {cidr} masquerade")
    return (
        "\n".join(
            [
                f"table inet {TABLE} {{}}",
                f"flush table inet {TABLE}",
                f"table inet {TABLE} {{",
                "    chain postrouting {",
                "        type nat hook postrouting priority srcnat; policy accept;",
                *rules,
                "    }",
                "}",
            ]
        )
        + "\n"
    )


MasqueradeError = nft.NftError


def apply(cluster_cidrs: list[IPNetwork]) -> None:
    nft.run_script(ruleset(cluster_cidrs), "the masquerade rules")


def remove() -> bool:
    """Delete plainnet's table; returns whether there was one (uninstall)."""
    return nft.delete_table("inet", TABLE)
