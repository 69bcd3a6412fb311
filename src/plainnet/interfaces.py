"""Small pyroute2 helpers shared by the lab builder and the CNI data plane."""

from __future__ import annotations

from ipaddress import IPv4Interface, IPv6Interface

from pyroute2 import IPRoute
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD


def add_address(ipr: IPRoute, index: int, address: IPv4Interface | IPv6Interface) -> None:
    """Add ``address`` to interface ``index`` without duplicate address detection: the
    addresses plainnet assigns are unique by construction and must work at once (IPv6
    DAD would hold them "tentative" for about a second)."""
    ipr.addr(
        "add",
        index=index,
        address=str(address.ip),
        prefixlen=address.network.prefixlen,
        flags=IFA_F_NODAD,
    )
