"""A minimal container runtime's CNI side, for the lab: it calls the plugins of a
conflist exactly as libcni does — each plugin executable found on ``CNI_PATH``, the
``CNI_*`` environment, the plugin's configuration on stdin with ``cniVersion``,
``name``, the previous plugin's result as ``prevResult`` and ``runtimeConfig`` for the
capabilities it declares — ADD in order, DEL in reverse, CHECK in order with the cached
result, GC and STATUS to every plugin. Results are cached per attachment, as libcni
caches them, so DEL and CHECK get the ``prevResult`` they expect.

Plugins run inside the node's namespace (``run``), where a real runtime runs them.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Runner = Callable[..., subprocess.CompletedProcess[bytes]]
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class CniCallError(Exception):
    plugin: str
    command: str
    code: int | None
    msg: str

    def __str__(self) -> str:
        return f"CNI {self.command} failed in plugin {self.plugin}: {self.msg} (code {self.code})"


class CniRuntime:
    def __init__(
        self, conflist: Path, cni_path: Sequence[Path], cache_dir: Path, run: Runner
    ) -> None:
        self.conflist = json.loads(conflist.read_text())
        self.cni_path = [Path(p) for p in cni_path]
        self.cache_dir = cache_dir
        self.run = run

    def _plugin_config(
        self, plugin: dict[str, Any], prev: dict[str, Any] | None, runtime_config: dict[str, Any]
    ) -> dict[str, Any]:
        config = dict(plugin)
        config["cniVersion"] = self.conflist["cniVersion"]
        config["name"] = self.conflist["name"]
        capabilities = plugin.get("capabilities", {})
        wanted = {k: v for k, v in runtime_config.items() if capabilities.get(k)}
        if wanted:
            config["runtimeConfig"] = wanted
        config.pop("capabilities", None)
        if prev is not None:
            config["prevResult"] = prev
        return config

    def _exec(
        self,
        plugin: dict[str, Any],
        command: str,
        config: dict[str, Any],
        container_id: str = "",
        netns: str = "",
        ifname: str = "",
    ) -> dict[str, Any] | None:
        executable = next(
            (d / plugin["type"] for d in self.cni_path if (d / plugin["type"]).exists()), None
        )
        if executable is None:
            raise CniCallError(
                plugin["type"], command, None, "plugin executable not found on CNI_PATH"
            )
        env = {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container_id,
            "CNI_NETNS": netns,
            "CNI_IFNAME": ifname,
            "CNI_PATH": ":".join(map(str, self.cni_path)),
            "PATH": PATH,
        }
        result = self.run(
            [str(executable)],
            env=env,
            input=json.dumps(config).encode(),
            capture_output=True,
            timeout=60,
        )
        output = result.stdout.strip()
        parsed = json.loads(output) if output else None
        if result.returncode != 0:
            error = parsed if isinstance(parsed, dict) else {}
            raise CniCallError(
                plugin["type"],
                command,
                error.get("code"),
                str(error.get("msg") or result.stderr.decode().strip()),
            )
        return parsed

    def _cache(self, container_id: str, ifname: str) -> Path:
        return self.cache_dir / f"{self.conflist['name']}-{container_id}-{ifname}.json"

    def add(
        self,
        container_id: str,
        netns: str,
        ifname: str = "eth0",
        runtime_config: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        prev: dict[str, Any] | None = None
        for plugin in self.conflist["plugins"]:
            config = self._plugin_config(plugin, prev, runtime_config or {})
            prev = self._exec(plugin, "ADD", config, container_id, netns, ifname) or prev
        assert prev is not None
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._cache(container_id, ifname).write_text(
            json.dumps({"result": prev, "runtimeConfig": runtime_config or {}})
        )
        return prev

    def delete(self, container_id: str, netns: str, ifname: str = "eth0") -> None:
        cached = self._cached(container_id, ifname)
        for plugin in reversed(self.conflist["plugins"]):
            config = self._plugin_config(
                plugin, cached.get("result"), cached.get("runtimeConfig", {})
            )
            self._exec(plugin, "DEL", config, container_id, netns, ifname)
        self._cache(container_id, ifname).unlink(missing_ok=True)

    def check(self, container_id: str, netns: str, ifname: str = "eth0") -> None:
        cached = self._cached(container_id, ifname)
        for plugin in self.conflist["plugins"]:
            config = self._plugin_config(
                plugin, cached.get("result"), cached.get("runtimeConfig", {})
            )
            self._exec(plugin, "CHECK", config, container_id, netns, ifname)

    @property
    def speaks_1_1(self) -> bool:
        """GC and STATUS exist from CNI 1.1.0 on; like libcni, an older conflist skips them."""
        return tuple(map(int, self.conflist["cniVersion"].split("."))) >= (1, 1, 0)

    def gc(self, valid: Sequence[tuple[str, str]]) -> None:
        if not self.speaks_1_1:
            return
        attachments = [{"containerID": c, "ifname": i} for c, i in valid]
        for plugin in self.conflist["plugins"]:
            config = self._plugin_config(plugin, None, {})
            config["cni.dev/valid-attachments"] = attachments
            self._exec(plugin, "GC", config)

    def status(self) -> None:
        if not self.speaks_1_1:
            return
        for plugin in self.conflist["plugins"]:
            self._exec(plugin, "STATUS", self._plugin_config(plugin, None, {}))

    def _cached(self, container_id: str, ifname: str) -> dict[str, Any]:
        try:
            return json.loads(self._cache(container_id, ifname).read_text())
        except FileNotFoundError:
            return {}
