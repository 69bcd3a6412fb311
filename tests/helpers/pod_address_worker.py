"""A process that allocates pod addresses through the file store, for the multi-process
tests and the benchmark. Prints one line per address it holds: ``<address> <container>``.

usage: python -m tests.helpers.pod_address_worker DIR SUBNET WORKER COUNT [--churn]

With --churn it allocates and releases in an endless loop (to be killed mid-run).
"""

import sys
from ipaddress import ip_network
from pathlib import Path

from plainnet.ipam.file_store import FilePodAddressStore
from plainnet.ipam.pod_addresses import PodAddressAllocator


def main() -> None:
    directory, subnet, worker, count = sys.argv[1:5]
    churn = "--churn" in sys.argv[5:]
    pods = PodAddressAllocator(ip_network(subnet), FilePodAddressStore(Path(directory)))
    if churn:
        n = 0
        while True:
            container = f"{worker}-churn-{n % 4}"
            pods.allocate(container, "eth0")
            pods.release(container)
            n += 1
    for n in range(int(count)):
        container = f"{worker}-{n}"
        address = pods.allocate(container, "eth0")
        print(address, container, flush=True)


if __name__ == "__main__":
    main()
