"""Family-agnostic aliases for the ``ipaddress`` types used throughout plainnet."""

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

IPNetwork = IPv4Network | IPv6Network
IPAddress = IPv4Address | IPv6Address


def family_name(network: IPNetwork | IPAddress) -> str:
    """``"IPv4"`` or ``"IPv6"``, for messages."""
    return f"IPv{network.version}"
