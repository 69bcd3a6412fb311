"""Install the plugin the way a DaemonSet's init container does: the executable into
the CNI bin dir, a conflist into the CNI conf dir. Both are replaced atomically, so a
runtime never sees half a file.

The executable is the C shim (``shim.c``), compiled here with the system C compiler.
Without one, a stdlib-only Python client with the same wire protocol is installed
instead, started by absolute path with ``-S -E`` (measured ~15 ms slower per call).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from plainnet.cni.protocol import python_client, shim_defines
from plainnet.errors import PlainnetError

PLUGIN = "plainnet"
CONFLIST = "10-plainnet.conflist"
SHIM_SOURCE = Path(__file__).with_name("shim.c")


def conflist(name: str = PLUGIN, portmap: bool = True, cni_version: str = "1.0.0") -> dict:
    """plainnet as the first plugin; the reference portmap plugin after it for hostPorts.
    cniVersion 1.0.0: the newest every plugin of the chain (Debian's portmap) speaks."""
    plugins: list[dict] = [{"type": PLUGIN, "bridge": "cbr0", "hairpin": True, "masquerade": True}]
    if portmap:
        plugins.append({"type": "portmap", "capabilities": {"portMappings": True}})
    return {"cniVersion": cni_version, "name": name, "plugins": plugins}


def _replace(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)
    Path(tmp).replace(path)


def build_plugin(destination: Path) -> str:
    """Put the plugin executable at ``destination``; returns which kind was installed."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler:
        with tempfile.TemporaryDirectory() as work:
            binary = Path(work) / PLUGIN
            result = subprocess.run(
                [compiler, "-O2", *shim_defines(), "-o", str(binary), str(SHIM_SOURCE)],
                capture_output=True,
                text=True,
            )
            if result.returncode != 0:
                raise PlainnetError(f"compiling the CNI shim failed: {result.stderr.strip()}")
            _replace(destination, binary.read_bytes(), 0o755)
            return "C shim"
    _replace(destination, python_client().encode(), 0o755)
    return "Python client (no C compiler found)"


def install(bin_dir: Path, conf_dir: Path, *, portmap: bool = True) -> tuple[Path, Path, str]:
    plugin = bin_dir / PLUGIN
    kind = build_plugin(plugin)
    config = conf_dir / CONFLIST
    _replace(config, (json.dumps(conflist(portmap=portmap), indent=1) + "\n").encode(), 0o644)
    return plugin, config, kind
