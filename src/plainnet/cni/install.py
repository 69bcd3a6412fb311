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

from plainnet.errors import PlainnetError

PLUGIN = "plainnet"
CONFLIST = "10-plainnet.conflist"
SHIM_SOURCE = Path(__file__).with_name("shim.c")

PYTHON_CLIENT = '''#!/usr/bin/python3 -S -E
"""plainnet CNI plugin (fallback without a C compiler): same protocol as shim.c."""
import json, os, socket, sys
if os.environ.get("CNI_COMMAND") == "VERSION":
    print('{"cniVersion":"1.1.0","supportedVersions":["1.0.0","1.1.0"]}')
    sys.exit(0)
config = sys.stdin.buffer.read()
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    sock.connect("\\0plainnet-cni")
except OSError as exc:
    try:
        version = json.loads(config).get("cniVersion", "1.1.0")
    except ValueError:
        version = "1.1.0"
    print(json.dumps({"cniVersion": version, "code": 11,
                      "msg": "plainnet agent is not running on this node",
                      "details": f"connect to @plainnet-cni: {exc.strerror}"}))
    sys.exit(1)
env = b"".join(f"{k}={v}".encode() + b"\\0" for k, v in os.environ.items() if k.startswith("CNI_"))
sock.sendall(env + b"\\0" + config)
sock.shutdown(socket.SHUT_WR)
answer = b""
while chunk := sock.recv(65536):
    answer += chunk
code, _, out = answer.partition(b"\\n")
sys.stdout.buffer.write(out)
sys.exit(int(code or b"11"))
'''


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
                [compiler, "-O2", "-o", str(binary), str(SHIM_SOURCE)],
                capture_output=True,
                text=True,
            )
            if result.returncode != 0:
                raise PlainnetError(f"compiling the CNI shim failed: {result.stderr.strip()}")
            _replace(destination, binary.read_bytes(), 0o755)
            return "C shim"
    _replace(destination, PYTHON_CLIENT.encode(), 0o755)
    return "Python client (no C compiler found)"


def install(bin_dir: Path, conf_dir: Path, *, portmap: bool = True) -> tuple[Path, Path, str]:
    plugin = bin_dir / PLUGIN
    kind = build_plugin(plugin)
    config = conf_dir / CONFLIST
    _replace(config, (json.dumps(conflist(portmap=portmap), indent=1) + "\n").encode(), 0o644)
    return plugin, config, kind
