"""A real etcd server (Debian's ``etcd-server``), started for a lab or a test.

The server listens on one address — loopback for tests, a lab host's address inside
the lab — with its data in a directory of its own, and is stopped by PID.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from plainnet.errors import PlainnetError
from plainnet.lab import netns

ETCD = "/usr/bin/etcd"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def etcd_command(data_dir: Path, host: str, client_port: int, peer_port: int) -> list[str]:
    client = f"http://{host}:{client_port}"
    peer = f"http://{host}:{peer_port}"
    return [
        ETCD,
        "--name",
        "plainnet",
        "--data-dir",
        str(data_dir),
        "--listen-client-urls",
        client,
        "--advertise-client-urls",
        client,
        "--listen-peer-urls",
        peer,
        "--initial-advertise-peer-urls",
        peer,
        "--initial-cluster",
        f"plainnet={peer}",
        "--initial-cluster-state",
        "new",
        "--log-level",
        "warn",
        "--logger",
        "zap",
        # room for benchmarks and tests that write thousands of leases in one transaction
        "--max-txn-ops",
        "50000",
        "--max-request-bytes",
        str(64 * 1024 * 1024),
    ]


class EtcdServer:
    """One etcd process. ``spawn`` starts the command (in a lab host, or here)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        client_port: int | None = None,
        data_dir: Path | None = None,
        spawn: Callable[..., subprocess.Popen[Any]] | None = None,
        namespace: str | None = None,
    ) -> None:
        if not Path(ETCD).exists():
            raise PlainnetError(
                f"{ETCD} not found: install Debian's etcd-server (scripts/install.sh does)"
            )
        self.host = host
        self.client_port = client_port or free_port()
        self.peer_port = free_port() if host == "127.0.0.1" else self.client_port + 1
        self._own_dir = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="pn-etcd-"))
        self.spawn = spawn or subprocess.Popen
        self.namespace = namespace  # probe from inside this lab host
        self.process: subprocess.Popen[Any] | None = None
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.client_port}"

    def start(self, timeout: float = 20) -> EtcdServer:
        member = self.data_dir / "member"
        log = self.log_path.open("ab")
        self.process = self.spawn(
            etcd_command(self.data_dir, self.host, self.client_port, self.peer_port),
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PlainnetError(f"etcd exited at start (see {self.log_path})")
            if member.exists() and self._answers():
                return self
            time.sleep(0.05)
        raise PlainnetError(f"etcd did not answer on {self.endpoint} within {timeout}s")

    def _answers(self) -> bool:
        """etcd's /health says true only once the member has a leader."""
        sock = netns.socket_in(self.namespace) if self.namespace else socket.socket()
        try:
            sock.settimeout(1)
            sock.connect((self.host, self.client_port))
            sock.sendall(f"GET /health HTTP/1.0\r\nHost: {self.host}\r\n\r\n".encode())
            reply = b""
            while chunk := sock.recv(4096):
                reply += chunk
            return b'"health":"true"' in reply
        except OSError:
            return False
        finally:
            sock.close()

    def stop(self) -> None:
        netns.terminate(self.process, grace_seconds=10)
        self.process = None

    def remove(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> EtcdServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.remove()
