"""Masquerade pod traffic that leaves the cluster CIDR, never pod-to-pod traffic.

One nftables table of plainnet's own (``inet plainnet``), written as one atomic
transaction with the ``nft`` tool: create-if-missing, flush, fill. Running it again
yields the same ruleset, so it is safe on every ADD; the server runs it once per set
of cluster CIDRs. Other tables (kube-proxy's, the portmap plugin's) are not touched.
"""

from __future__ import annotations

import subprocess

from plainnet.ipam.types import IPNetwork

NFT = "/usr/sbin/nft"
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


class MasqueradeError(Exception):
    """nft refused the ruleset; the message carries its words."""


def apply(cluster_cidrs: list[IPNetwork]) -> None:
    result = subprocess.run(
        [NFT, "-f", "-"], input=ruleset(cluster_cidrs), text=True, capture_output=True, timeout=30
    )
    if result.returncode != 0:
        raise MasqueradeError(f"could not install the masquerade rules: {result.stderr.strip()}")


def remove() -> bool:
    """Delete plainnet's table; returns whether there was one (uninstall)."""
    result = subprocess.run(
        [NFT, "delete", "table", "inet", TABLE], capture_output=True, timeout=30
    )
    return result.returncode == 0
