"""The agent's side of the CNI plugin: answers the shim on the abstract unix socket
``@plainnet-cni`` of the node's network namespace.

An abstract socket needs no path and exists per network namespace, so the shim finds
the agent of *its* node — also in the lab, where every node is a namespace on one
machine. Abstract sockets have no file permissions; the server therefore accepts only
peers whose credentials (``SO_PEERCRED``) say root, like the runtimes that call CNI.

One thread per request: ADDs run concurrently (IPAM is safe across threads and
processes), and a slow request never blocks the agent's asyncio loop.
"""

from __future__ import annotations

import logging
import os
import socket
import socketserver
import struct
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from plainnet.cni.errors import INVALID_NETWORK_CONFIG, CniError
from plainnet.cni.protocol import (
    LATEST_VERSION,
    MAX_REQUEST,
    decode_request,
    encode_answer,
    socket_address,
)
from plainnet.errors import PlainnetError
from plainnet.node_state import NodeState
from plainnet.text import printable

if TYPE_CHECKING:
    from plainnet.cni.handler import CniHandler

log = logging.getLogger("plainnet.cni.server")

#: Room for the CNI_* environment beside a configuration of MAX_REQUEST bytes.
ENVIRONMENT_ALLOWANCE = 64 * 1024


class _RequestHandler(socketserver.BaseRequestHandler):
    server: CniServer

    def handle(self) -> None:
        connection: socket.socket = self.request
        connection.settimeout(60)
        pid, uid, _ = struct.unpack(
            "3i",
            connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")),
        )
        if uid not in (0, os.geteuid()):
            log.warning("refused CNI request from pid %d uid %d: not root", pid, uid)
            return
        data = bytearray()
        limit = MAX_REQUEST + ENVIRONMENT_ALLOWANCE
        while len(data) <= limit:
            chunk = connection.recv(65536)
            if not chunk:
                break
            data += chunk
        if len(data) > limit:  # answered at once: the shim reads it after its write fails
            error = CniError(
                INVALID_NETWORK_CONFIG,
                "network configuration too large",
                f"at most {MAX_REQUEST} bytes",
            )
            connection.sendall(encode_answer(1, error.to_json(LATEST_VERSION)))
            return
        env, stdin = decode_request(bytes(data))
        code, out = self.server.handler().handle(env, stdin)
        connection.sendall(encode_answer(code, out))


class CniServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = False

    def __init__(
        self,
        run_dir: Path,
        node_state: Callable[[], NodeState | None],
        name: str | None = None,
    ) -> None:
        """Binds at once; the handler and pyroute2 are loaded by the first request, so
        the agent's own start — claim, list, install routes — never waits for that
        import (~70 ms, ~10 MB). ``node_state``: this node's facts as the agent has
        them now (handed over in memory)."""
        self.run_dir = run_dir
        self.node_state = node_state
        self._handler: CniHandler | None = None
        self._handler_lock = threading.Lock()
        self.address = name or socket_address()
        try:
            super().__init__(self.address, _RequestHandler)
        except OSError as exc:
            raise PlainnetError(
                f"cannot serve CNI on @{self.address.lstrip(chr(0))} ({exc.strerror}): is "
                f"another plainnet agent running on this node?"
            ) from None
        self._thread: threading.Thread | None = None

    def handle_error(self, request: object, client_address: object) -> None:
        """One line, not socketserver's traceback on stderr: a plugin killed mid-request
        (the runtime timed out) is ordinary."""
        error = sys.exc_info()[1]
        log.warning("CNI request ended early: %s", printable(str(error)))

    def handler(self) -> CniHandler:
        with self._handler_lock:
            if self._handler is None:
                from plainnet.cni.handler import CniHandler
                from plainnet.cni.netlink_dataplane import NetlinkDataplane

                self._handler = CniHandler(self.run_dir, self.node_state, NetlinkDataplane())
            return self._handler

    def start(self) -> CniServer:
        self._thread = threading.Thread(target=self.serve_forever, name="cni-server", daemon=True)
        self._thread.start()
        log.info("CNI server listening on @%s", self.address.lstrip("\0"))
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
