"""Write to a lab's etcd from inside the lab (tests and benchmarks run it with lab.run).

usage: python -m tests.helpers.etcd_tool ENDPOINT put KEY VALUE
       python -m tests.helpers.etcd_tool ENDPOINT get KEY          (prints the value)
       python -m tests.helpers.etcd_tool ENDPOINT delete KEY
       python -m tests.helpers.etcd_tool ENDPOINT put-leases COUNT FIRST_INDEX GATEWAY_PREFIX
       python -m tests.helpers.etcd_tool ENDPOINT time-put KEY VALUE   (prints seconds)
       python -m tests.helpers.etcd_tool ENDPOINT flood COUNT   (COUNT separate hostile puts)

put-leases writes COUNT host-gw leases /coreos.com/network/subnets/10.<a>.<b>.0-24 in one
transaction, each with a node address of its own: GATEWAY_PREFIX.<20 + index> (node
addresses are unique: a second claim of one is refused).
"""

import asyncio
import json
import sys
import time

import aetcd
import aetcd.transactions

from plainnet.datastore.etcd import etcd_client

PREFIX = "/coreos.com/network/subnets/"


def lease_name(index: int) -> str:
    return f"10.{100 + index // 256}.{index % 256}.0-24"


async def main(endpoint: str, command: str, *args: str) -> None:
    client = etcd_client(endpoint, timeout=120)
    try:
        if command == "put":
            await client.put(args[0].encode(), args[1].encode())
        elif command == "time-put":
            started = time.perf_counter()
            await client.put(args[0].encode(), args[1].encode())
            print(time.perf_counter() - started)
        elif command == "get":
            value = await client.get(args[0].encode())
            print(value.value.decode() if value else "")
        elif command == "delete":
            await client.delete(args[0].encode())
        elif command == "put-leases":
            count, first, gateway = int(args[0]), int(args[1]), args[2]
            puts = []
            for i in range(first, first + count):
                value = {
                    "PublicIP": f"{gateway}.{20 + i}",
                    "BackendType": "host-gw",
                    "PlainnetNode": f"peer{i}",
                }
                puts.append(
                    aetcd.transactions.Put(
                        (PREFIX + lease_name(i)).encode(), json.dumps(value).encode()
                    )
                )
            succeeded, _ = await client.transaction(compare=[], success=puts, failure=[])
            assert succeeded
        elif command == "flood":
            value = json.dumps({"PublicIP": "10.250.0.9", "BackendType": "host-gw"}).encode()
            keys = [
                f"{PREFIX}192.{168 + i // 65536}.{i // 256 % 256}.{i % 256}-32"
                for i in range(int(args[0]))
            ]
            for start in range(0, len(keys), 200):  # separate puts, 200 in flight
                await asyncio.gather(
                    *(client.put(k.encode(), value) for k in keys[start : start + 200])
                )
        else:
            raise SystemExit(f"unknown command {command}")
    finally:
        await client.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
