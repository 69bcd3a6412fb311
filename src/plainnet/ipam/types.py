"""Family-agnostic aliases for the ``ipaddress`` types used throughout plainnet."""

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

IPNetwork = IPv4Network | IPv6Network
IPAddress = IPv4Address | IPv6Address


def address_span(network: IPNetwork) -> tuple[int, int]:
    """First and last address as ints, from the prefix length: ``ipaddress``'s own
    ``broadcast_address`` builds two objects and caches them on each network, which a
    rebuild of 65,536 peers' subnets pays for more than for anything else it does."""
    start = int(network.network_address)
    return start, start + (1 << (network.max_prefixlen - network.prefixlen)) - 1


def family_name(network: IPNetwork | IPAddress) -> str:
    """``"IPv4"`` or ``"IPv6"``, for messages."""
    return f"IPv{network.version}"
