"""Run a container of a manifest in ``deploy/`` with podman, with the settings kubelet
would give it: so the tests run the image exactly as the DaemonSet and Deployment say.

:func:`run_arguments` is the pure part: from a pod spec and one of its containers to
``podman run`` arguments — command and args with ``$(VAR)`` expanded as kubelet does,
env (values, ``fieldRef`` and ``configMapKeyRef``), ``securityContext`` (privileged,
capabilities, user, read-only root, no new privileges), ``hostPath`` volumes (mapped
to a directory that stands for that node's filesystem; ``HostToContainer`` propagation
as ``rslave``), ``hostNetwork`` (the lab node's namespace stands for the host's), and
the service account kubelet mounts for in-cluster credentials. Anything of the spec
this does not know how to give is refused, so a manifest cannot silently run with
settings the test never applied.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plainnet.errors import PlainnetError

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
#: Container fields kubelet acts on that do not change what runs where in a test.
_IGNORED_CONTAINER_FIELDS = {
    "name",
    "image",
    "imagePullPolicy",
    "resources",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
}
_HANDLED_CONTAINER_FIELDS = {"command", "args", "env", "securityContext", "volumeMounts"}


@dataclass
class PodContext:
    """What kubelet knows when it starts a pod's containers on a node."""

    node_name: str
    pod_name: str
    namespace: str
    #: ConfigMap name -> its data
    config_maps: Mapping[str, Mapping[str, str]]
    #: a hostPath path -> the directory standing for it on this node
    host_path: Callable[[str], Path]
    #: the network namespace standing for the host's (``hostNetwork: true``)
    host_network: Path | None = None
    #: a directory holding token, ca.crt and namespace (the service account's)
    service_account: Path | None = None
    #: the API server as pods see it (KUBERNETES_SERVICE_HOST/PORT)
    api_server: tuple[str, int] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)


def expand(text: str, env: Mapping[str, str]) -> str:
    """``$(VAR)`` replaced by env's value as kubelet does; unknown references stay as
    written and ``$$`` escapes a ``$``."""
    out, i = [], 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
            continue
        match = _REFERENCE.match(text, i)
        if match and match.group(1) in env:
            out.append(env[match.group(1)])
            i = match.end()
            continue
        out.append(text[i])
        i += 1
    return "".join(out)


def container_env(container: Mapping[str, Any], context: PodContext) -> dict[str, str]:
    fields = {
        "spec.nodeName": context.node_name,
        "metadata.name": context.pod_name,
        "metadata.namespace": context.namespace,
    }
    env: dict[str, str] = {}
    if context.api_server is not None:
        env["KUBERNETES_SERVICE_HOST"] = context.api_server[0]
        env["KUBERNETES_SERVICE_PORT"] = str(context.api_server[1])
    for entry in container.get("env", []):
        name = entry["name"]
        if "value" in entry:
            env[name] = expand(entry["value"], env)
            continue
        source = entry["valueFrom"]
        if "fieldRef" in source:
            env[name] = fields[source["fieldRef"]["fieldPath"]]
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            env[name] = context.config_maps[ref["name"]][ref["key"]]
        else:
            raise PlainnetError(f"env {name}: {sorted(source)} is not supported here")
    return env | context.extra_env


def _security(security: Mapping[str, Any]) -> list[str]:
    args: list[str] = []
    known = {
        "privileged",
        "capabilities",
        "runAsUser",
        "runAsNonRoot",
        "allowPrivilegeEscalation",
        "readOnlyRootFilesystem",
    }
    if unknown := set(security) - known:
        raise PlainnetError(f"securityContext {sorted(unknown)} is not supported here")
    if security.get("privileged"):
        args.append("--privileged")
    capabilities = security.get("capabilities", {})
    args += [f"--cap-drop={c}" for c in capabilities.get("drop", [])]
    args += [f"--cap-add={c}" for c in capabilities.get("add", [])]
    if "runAsUser" in security:
        args.append(f"--user={security['runAsUser']}")
    if security.get("runAsNonRoot") and not security.get("runAsUser"):
        raise PlainnetError("runAsNonRoot without runAsUser: the image's user is root")
    if security.get("allowPrivilegeEscalation") is False:
        args.append("--security-opt=no-new-privileges")
    if security.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    return args


def _mounts(pod: Mapping[str, Any], container: Mapping[str, Any], context: PodContext) -> list[str]:
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    args = []
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "hostPath" not in volume:
            raise PlainnetError(f"volume {mount['name']}: only hostPath volumes are supported")
        source = context.host_path(volume["hostPath"]["path"])
        if volume["hostPath"].get("type") == "DirectoryOrCreate":
            source.mkdir(parents=True, exist_ok=True)
        options = ["ro" if mount.get("readOnly") else "rw"]
        propagation = mount.get("mountPropagation", "None")
        options.append(
            {"None": "rprivate", "HostToContainer": "rslave", "Bidirectional": "rshared"}[
                propagation
            ]
        )
        args.append(f"--volume={source}:{mount['mountPath']}:{','.join(options)}")
    if context.service_account is not None and pod.get("serviceAccountName"):
        args.append(f"--volume={context.service_account}:{SERVICE_ACCOUNT_DIR}:ro")
    return args


def run_arguments(
    pod: Mapping[str, Any], container: Mapping[str, Any], image: str, context: PodContext
) -> list[str]:
    """``podman run`` options, image and command for ``container`` of pod spec ``pod``."""
    if unknown := set(container) - _HANDLED_CONTAINER_FIELDS - _IGNORED_CONTAINER_FIELDS:
        raise PlainnetError(f"container fields {sorted(unknown)} are not supported here")
    env = container_env(container, context)
    args = [f"--env={k}={v}" for k, v in env.items()]
    args += _security(container.get("securityContext", {}))
    args += _mounts(pod, container, context)
    if pod.get("hostNetwork"):
        if context.host_network is None:
            raise PlainnetError("hostNetwork: no namespace given to stand for the host's")
        args.append(f"--network=ns:{context.host_network}")
    else:
        args.append("--network=none")
    command = [expand(word, env) for word in container.get("command", [])]
    command += [expand(word, env) for word in container.get("args", [])]
    entrypoint = ["--entrypoint=" + command[0]] if command else []
    return [*args, *entrypoint, image, *command[1:]]


def write_service_account(directory: Path, token: str, ca_file: Path, namespace: str) -> Path:
    """What kubelet mounts at :data:`SERVICE_ACCOUNT_DIR` for a pod's service account."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "token").write_text(token)
    (directory / "ca.crt").write_bytes(ca_file.read_bytes())
    (directory / "namespace").write_text(namespace)
    return directory


class Podman:
    """podman as root, with the run flags this machine needs (``scripts/build-image.sh
    --run-flags``); every container it starts is named and removed by :meth:`remove`."""

    def __init__(self, run_flags: list[str]) -> None:
        self.run_flags = run_flags
        self.started: list[str] = []

    def __call__(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise PlainnetError(f"podman {args[0]} failed: {result.stderr.strip()[-800:]}")
        return result.stdout

    def run(self, name: str, arguments: list[str], *, detach: bool) -> str:
        self("rm", "--force", "--time=2", name, check=False)  # a leftover of a killed run
        self.started.append(name)
        mode = ["--detach"] if detach else ["--rm"]
        return self("run", *mode, "--pull=never", f"--name={name}", *self.run_flags, *arguments)

    def remove(self) -> None:
        for name in reversed(self.started):
            self("rm", "--force", "--time=5", name, check=False)
        self.started.clear()
