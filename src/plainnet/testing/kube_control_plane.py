"""A real Kubernetes control plane for the lab and the tests: kube-apiserver (v1.20.2,
built from Debian's sources by ``scripts/build-kube.sh``) on a real etcd, with TLS,
static bearer tokens and RBAC on — so the ClusterRoles in ``deploy/`` are enforced.

Identities: ``admin`` is in ``system:masters`` (the test harness); the others carry the
user names of ServiceAccounts (``system:serviceaccount:<namespace>:<name>``), so the
RoleBindings in ``deploy/`` that name those ServiceAccounts apply to them exactly as in
a cluster.
"""

from __future__ import annotations

import http.client
import json
import secrets
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from plainnet.errors import PlainnetError
from plainnet.lab import netns
from plainnet.testing.etcd_server import free_port

OPENSSL = "/usr/bin/openssl"
BUILD_SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "build-kube.sh"
RBAC_MANIFEST = Path(__file__).resolve().parents[3] / "deploy" / "rbac.yaml"
DEFAULT_CACHE = Path("/var/cache/plainnet/kube-v1.20.2-2")  # -2: built with reflect2 1.0.2
SERVICE_CIDR = "10.96.0.0/16"

#: Where objects of each kind are created.
_COLLECTIONS = {
    "ServiceAccount": "/api/v1/namespaces/{namespace}/serviceaccounts",
    "ConfigMap": "/api/v1/namespaces/{namespace}/configmaps",
    "DaemonSet": "/apis/apps/v1/namespaces/{namespace}/daemonsets",
    "Deployment": "/apis/apps/v1/namespaces/{namespace}/deployments",
    "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
    "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
    "Role": "/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles",
    "RoleBinding": "/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings",
}

#: name -> (user, groups) of every identity that gets a token.
IDENTITIES = {
    "admin": ("plainnet-admin", ["system:masters"]),
    "agent": (
        "system:serviceaccount:kube-system:plainnet-agent",
        ["system:serviceaccounts", "system:serviceaccounts:kube-system"],
    ),
    "allocator": (
        "system:serviceaccount:kube-system:plainnet-allocator",
        ["system:serviceaccounts", "system:serviceaccounts:kube-system"],
    ),
    "cloud-routes": (
        "system:serviceaccount:kube-system:plainnet-cloud-routes",
        ["system:serviceaccounts", "system:serviceaccounts:kube-system"],
    ),
    "nobody": ("plainnet-nobody", []),
}


def kube_binaries(cache: Path = DEFAULT_CACHE) -> Path:
    """The directory holding kube-apiserver and kube-controller-manager, built once per
    machine (minutes) by scripts/build-kube.sh, found at once afterwards."""
    if (cache / "kube-apiserver").exists() and (cache / "kube-controller-manager").exists():
        return cache
    result = subprocess.run(["bash", str(BUILD_SCRIPT), str(cache)], capture_output=True, text=True)
    if result.returncode != 0:
        raise PlainnetError(
            f"building the Kubernetes control plane failed: {result.stderr.strip()[-800:]}"
        )
    return cache


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run([OPENSSL, *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise PlainnetError(f"openssl {args[0]} failed: {result.stderr.strip()}")


class _Connection(http.client.HTTPSConnection):
    """HTTPS to the API server; through a socket made by ``make_socket`` (e.g. one inside
    a lab namespace) when given."""

    def __init__(
        self,
        host: str,
        port: int,
        context: ssl.SSLContext,
        make_socket: Callable[[], socket.socket] | None,
    ) -> None:
        super().__init__(host, port, context=context, timeout=10)
        self._make_socket = make_socket

    def connect(self) -> None:
        if self._make_socket is None:
            super().connect()
            return
        sock = self._make_socket()
        sock.settimeout(self.timeout)
        sock.connect((self.host, self.port))
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


class KubeControlPlane:
    def __init__(
        self,
        etcd_endpoint: str,
        host: str = "127.0.0.1",
        port: int | None = None,
        binaries: Path | None = None,
        workdir: Path | None = None,
        spawn: Callable[..., subprocess.Popen[Any]] | None = None,
        connect: Callable[[], socket.socket] | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.etcd_endpoint = etcd_endpoint
        self.host = host
        self.port = port or free_port()
        self.binaries = binaries or kube_binaries()
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="pn-kube-"))
        self.spawn = spawn or subprocess.Popen
        self.connect = connect  # a socket factory when the server lives in a lab namespace
        self.tokens = {name: secrets.token_hex(16) for name in IDENTITIES}
        self.extra_args = extra_args
        self.apiserver: subprocess.Popen[Any] | None = None
        self.controller_manager: subprocess.Popen[Any] | None = None

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def ca_file(self) -> Path:
        return self.workdir / "ca.crt"

    def _certificates(self) -> None:
        w = self.workdir
        _openssl(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=plainnet-test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            cwd=w,
        )
        (w / "san.cnf").write_text(
            f"subjectAltName=IP:{self.host},DNS:localhost,DNS:kubernetes,IP:10.96.0.1\n"
        )
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=kube-apiserver",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            cwd=w,
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.cnf",
            "-out",
            "server.crt",
            cwd=w,
        )
        _openssl("genrsa", "-out", "sa.key", "2048", cwd=w)
        _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=w)
        lines = []
        for name, (user, groups) in IDENTITIES.items():
            lines.append(f'{self.tokens[name]},{user},{name},"{",".join(groups)}"')
        (w / "tokens.csv").write_text("\n".join(lines) + "\n")

    def command(self) -> list[str]:
        w = self.workdir
        return [
            str(self.binaries / "kube-apiserver"),
            f"--etcd-servers={self.etcd_endpoint}",
            f"--bind-address={self.host}",
            f"--advertise-address={self.host}",
            f"--secure-port={self.port}",
            "--insecure-port=0",
            "--endpoint-reconciler-type=none",
            f"--tls-cert-file={w / 'server.crt'}",
            f"--tls-private-key-file={w / 'server.key'}",
            f"--client-ca-file={w / 'ca.crt'}",
            f"--token-auth-file={w / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            "--anonymous-auth=false",
            f"--service-account-key-file={w / 'sa.pub'}",
            f"--service-account-signing-key-file={w / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc",
            "--api-audiences=https://kubernetes.default.svc",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--enable-admission-plugins=NamespaceLifecycle,ServiceAccount",
            "--allow-privileged=true",  # as kubeadm clusters run: CNI installers need it
            "--profiling=false",
            "--v=0",
            *self.extra_args,
        ]

    def start(self, timeout: float = 60) -> KubeControlPlane:
        self._certificates()
        return self._launch(timeout)

    def restart(self, timeout: float = 60) -> None:
        """Stop and start kube-apiserver with the same certificates, tokens and data."""
        self._stop_apiserver()
        self._launch(timeout)

    def _stop_apiserver(self) -> None:
        """SIGTERM, then SIGKILL after 5 s: with watches open, kube-apiserver's graceful
        shutdown waits for them far longer than a test should."""
        netns.terminate(self.apiserver, grace_seconds=5)

    def _launch(self, timeout: float) -> KubeControlPlane:
        log = (self.workdir / "kube-apiserver.log").open("ab")
        self.apiserver = self.spawn(
            self.command(), stdout=log, stderr=log, stdin=subprocess.DEVNULL
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.apiserver.poll() is not None:
                raise PlainnetError("kube-apiserver exited at start: " + self.log()[-800:])
            if self._ready():
                return self
            time.sleep(0.2)
        raise PlainnetError(f"kube-apiserver not ready within {timeout}s: {self.log()[-800:]}")

    def log(self) -> str:
        path = self.workdir / "kube-apiserver.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _ready(self) -> bool:
        try:
            status, _ = self.request("GET", "/readyz")
            return status == 200
        except OSError:
            return False

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        identity: str = "admin",
        user_agent: str | None = None,
    ) -> tuple[int, Any]:
        """A raw API request as ``identity``: (HTTP status, decoded JSON or text)."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {self.tokens[identity]}"}
        if user_agent is not None:
            headers["User-Agent"] = user_agent
        if data is not None:
            headers["Content-Type"] = (
                "application/merge-patch+json" if method == "PATCH" else "application/json"
            )
        connection = _Connection(self.host, self.port, context, self.connect)
        try:
            connection.request(method, path, body=data, headers=headers)
            reply = connection.getresponse()
            status, payload = reply.status, reply.read()
        finally:
            connection.close()
        try:
            return status, json.loads(payload)
        except ValueError:
            return status, payload.decode(errors="replace")

    def apply(self, manifest: Path) -> None:
        """Create every object of a YAML manifest (as admin); existing ones are kept."""
        import yaml

        for document in yaml.safe_load_all(manifest.read_text()):
            kind = document["kind"]
            namespace = document["metadata"].get("namespace", "")
            status, reply = self.request(
                "POST", _COLLECTIONS[kind].format(namespace=namespace), document
            )
            if status not in (201, 409):
                raise PlainnetError(
                    f"applying {kind} {document['metadata']['name']} failed: {reply}"
                )

    def create_node(self, name: str, addresses: list[str], provider_id: str | None = None) -> None:
        """A Node object as a kubelet registers it: the object (with the cloud's
        ``spec.providerID`` when given), then its status addresses."""
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}
        if provider_id:
            body["spec"] = {"providerID": provider_id}
        status, reply = self.request("POST", "/api/v1/nodes", body)
        if status not in (201, 409):
            raise PlainnetError(f"creating node {name} failed: {reply}")
        entries = [{"type": "InternalIP", "address": a} for a in addresses]
        status, reply = self.request(
            "PATCH", f"/api/v1/nodes/{name}/status", {"status": {"addresses": entries}}
        )
        if status != 200:
            raise PlainnetError(f"setting the addresses of node {name} failed: {reply}")

    def start_controller_manager(self, cluster_cidr: str, node_mask: int) -> None:
        """The real kube-controller-manager with only its node IPAM controller, i.e.
        ``--allocate-node-cidrs`` as in a kubenet-style cluster. Its range allocator
        starts about 10 s after the process (its first node list is a 10 s poll)."""
        kubeconfig = self.kubeconfig("admin")
        log = (self.workdir / "kube-controller-manager.log").open("ab")
        self.controller_manager = self.spawn(
            [
                str(self.binaries / "kube-controller-manager"),
                f"--kubeconfig={kubeconfig}",
                "--controllers=nodeipam",
                "--allocate-node-cidrs=true",
                f"--cluster-cidr={cluster_cidr}",
                f"--node-cidr-mask-size={node_mask}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--leader-elect=false",
                "--port=0",
                "--secure-port=0",
                f"--service-account-private-key-file={self.workdir / 'sa.key'}",
                f"--root-ca-file={self.ca_file}",
                "--v=2",
            ],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        log.close()

    def kubeconfig(self, identity: str, path: Path | None = None) -> Path:
        path = path or self.workdir / f"{identity}.kubeconfig"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": identity,
            "clusters": [
                {
                    "name": "plainnet",
                    "cluster": {"server": self.url, "certificate-authority": str(self.ca_file)},
                }
            ],
            "users": [{"name": identity, "user": {"token": self.tokens[identity]}}],
            "contexts": [{"name": identity, "context": {"cluster": "plainnet", "user": identity}}],
        }
        path.write_text(json.dumps(config, indent=1))
        return path

    def stop(self) -> None:
        netns.terminate(self.controller_manager, grace_seconds=15)
        self._stop_apiserver()
        self.apiserver = None

    def remove(self) -> None:
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> KubeControlPlane:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.remove()
