"""IP address management: pure allocation logic, plus the pod address store adapter.

- :mod:`plainnet.ipam.node_subnets` splits a cluster CIDR into node subnets.
- :mod:`plainnet.ipam.pod_addresses` hands out pod addresses inside one node subnet.
- :mod:`plainnet.ipam.file_store` keeps pod address reservations on disk, crash-safe and
  shared between processes.

Everything except ``file_store`` is free of I/O and works the same for IPv4 and IPv6.
"""

from plainnet.ipam.errors import (
    AddressExhaustedError,
    IpamError,
    SubnetConflictError,
    SubnetExhaustedError,
    SubnetOutOfRangeError,
)
from plainnet.ipam.node_subnets import NodeSubnetAllocator, SubnetPool
from plainnet.ipam.pod_addresses import (
    PodAddressAllocator,
    PodAddressState,
    PodAddressStore,
    Reservation,
)

__all__ = [
    "AddressExhaustedError",
    "IpamError",
    "NodeSubnetAllocator",
    "PodAddressAllocator",
    "PodAddressState",
    "PodAddressStore",
    "Reservation",
    "SubnetConflictError",
    "SubnetExhaustedError",
    "SubnetOutOfRangeError",
    "SubnetPool",
]
