"""A real EC2 API implementation for the tests and the lab: ``moto`` in server mode.

No cloud is reachable here, and a mock inside the test process would let the
controller's boto3 calls bypass HTTP, request signing and pagination; moto's server
answers the EC2 query API over HTTP, so the controller talks to it exactly as to AWS
(only the endpoint URL differs). It listens on loopback — of this machine, or of the
lab host it is spawned in — and is stopped by PID.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from plainnet.errors import PlainnetError
from plainnet.lab import netns
from plainnet.testing.etcd_server import free_port

#: What boto3 needs to sign requests; moto accepts any.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "plainnet-test",
    "AWS_SECRET_ACCESS_KEY": "plainnet-test",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class MotoServer:
    def __init__(
        self,
        port: int | None = None,
        spawn: Callable[..., subprocess.Popen[Any]] | None = None,
        namespace: str | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.port = port or free_port()
        self.spawn = spawn or subprocess.Popen
        self.namespace = namespace
        self.log_path = log_path
        self.process: subprocess.Popen[Any] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> MotoServer:
        executable = Path(sys.executable).with_name("moto_server")
        if not executable.exists():
            raise PlainnetError(f"{executable} not found: scripts/install.sh installs moto[server]")
        log = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        self.process = self.spawn(
            [str(executable), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        if self.log_path:
            log.close()  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PlainnetError(f"moto_server exited at start (see {self.log_path})")
            if self._answers():
                return self
            time.sleep(0.1)
        raise PlainnetError(f"moto_server did not answer on {self.endpoint} within {timeout}s")

    def _answers(self) -> bool:
        sock = netns.socket_in(self.namespace) if self.namespace else socket.socket()
        try:
            sock.settimeout(1)
            sock.connect(("127.0.0.1", self.port))
            sock.sendall(b"GET /moto-api/ HTTP/1.0\r\nHost: localhost\r\n\r\n")
            return sock.recv(12).startswith(b"HTTP/1.")
        except OSError:
            return False
        finally:
            sock.close()

    def client(self) -> Any:
        """A boto3 EC2 client for this server (from this machine's namespace)."""
        import boto3

        return boto3.client(
            "ec2",
            endpoint_url=self.endpoint,
            region_name=CREDENTIALS["AWS_REGION"],
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def stop(self) -> None:
        netns.terminate(self.process, grace_seconds=5)
        self.process = None

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
