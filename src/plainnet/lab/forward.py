"""A loopback door into a lab host: ``127.0.0.1:PORT`` on this machine, each connection
carried to ``ADDRESS:PORT`` inside the host's namespace. It lets ``kubectl`` on the
machine reach the lab's kube-apiserver without giving the machine's namespace a route
or an address into the lab (lab safety: nothing of the lab is added to it; a listening
loopback socket is all). Ends by itself when the lab host's namespace is gone.

    python -m plainnet.lab.forward --listen-port 40123 --namespace pn-demo-etcd \
        --target 10.250.0.1:6443
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket

from plainnet.lab import netns


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, OSError):
            writer.close()


async def serve(port: int, namespace: str, host: str, target_port: int) -> None:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        sock = netns.socket_in(namespace)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, (host, target_port))
        except OSError:
            sock.close()
            client_w.close()
            return
        server_r, server_w = await asyncio.open_connection(sock=sock)
        await asyncio.gather(_pipe(client_r, server_w), _pipe(server_r, client_w))

    server = await asyncio.start_server(handle, "127.0.0.1", port, family=socket.AF_INET)
    async with server:
        while netns.exists(namespace):
            await asyncio.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen-port", type=int, required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--target", required=True, help="ADDRESS:PORT inside the namespace")
    args = parser.parse_args()
    host, _, port = args.target.rpartition(":")
    asyncio.run(serve(args.listen_port, args.namespace, host, int(port)))


if __name__ == "__main__":
    main()
