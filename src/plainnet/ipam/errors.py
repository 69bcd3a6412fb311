"""IPAM errors; each message names the network involved and what limits it."""

from plainnet.errors import PlainnetError


class IpamError(PlainnetError):
    """Base class of every allocation failure."""


class SubnetOutOfRangeError(IpamError):
    """A subnet is not one of the node subnets the cluster CIDR is split into."""


class SubnetConflictError(IpamError):
    """A subnet is already allocated (occupy) or was never allocated (release)."""


class SubnetExhaustedError(IpamError):
    """Every node subnet of a cluster CIDR is allocated."""


class AddressExhaustedError(IpamError):
    """Every usable pod address of a node subnet is reserved."""
