"""Install the plugin the way a DaemonSet's init container does: the executable into
the CNI bin dir, the reference plugins the chain names beside it, a conflist into the
CNI conf dir. Every file is replaced atomically, so a runtime never sees half a file.

The executable is the C shim (``shim.c``), linked statically: the container runtime
runs it on the host, whose C library may be older than the one it was built against
(a dynamically linked shim from a Debian 12 image fails on a Debian 11 node with
``GLIBC_2.34 not found``). The image ships it prebuilt in :data:`SHIPPED_DIR`, with
the reference plugins the conflist chains; a host install compiles it here. Without
a C compiler a stdlib-only Python client with the same wire protocol is installed
instead (measured ~15 ms slower per call) — for host installs only, since it names
this machine's interpreter.

The conflist chains only what is installed: portmap is named when the bin dir ends up
with a portmap executable, so a node without one gets pods without hostPorts (and the
installer says so) rather than pods that all fail at the portmap step.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from plainnet.cni.protocol import python_client, shim_defines
from plainnet.errors import PlainnetError

PLUGIN = "plainnet"
CONFLIST = "10-plainnet.conflist"
SHIM_SOURCE = Path(__file__).with_name("shim.c")
#: Where the image keeps the static shim and the reference plugins it chains.
SHIPPED_DIR = Path("/usr/lib/plainnet/cni")
#: Debian's containernetworking-plugins (portmap, bridge, host-local, ...).
REFERENCE_DIR = Path("/usr/lib/cni")
#: The reference plugins the conflist may chain after plainnet.
CHAINED = ("portmap",)
#: In the bin dir: what this installer placed there, for ``plainnet cni uninstall``.
RECORD = ".plainnet-installed"


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


def compile_shim(destination: Path, compiler: str) -> str:
    """Compile ``shim.c`` to ``destination``: static when this C library can be linked
    statically (Debian's libc6-dev can), else dynamic. Returns which it is."""
    with tempfile.TemporaryDirectory() as work:
        binary = Path(work) / PLUGIN
        errors = ""
        for linking in (["-static"], []):
            result = subprocess.run(
                [
                    compiler,
                    "-O2",
                    "-s",
                    *linking,
                    *shim_defines(),
                    "-o",
                    str(binary),
                    str(SHIM_SOURCE),
                ],
                capture_output=True,
                text=True,
            )
            if result.returncode == 0:
                _replace(destination, binary.read_bytes(), 0o755)
                return "static C shim" if linking else "C shim (dynamically linked)"
            errors = result.stderr.strip()
        raise PlainnetError(f"compiling the CNI shim failed: {errors[-600:]}")


def build_plugin(destination: Path, shipped: Path = SHIPPED_DIR) -> str:
    """Put the plugin executable at ``destination``; returns which kind was installed."""
    prebuilt = shipped / PLUGIN
    if prebuilt.is_file():
        _replace(destination, prebuilt.read_bytes(), 0o755)
        return "static C shim"
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler:
        return compile_shim(destination, compiler)
    _replace(destination, python_client().encode(), 0o755)
    return "Python client (no C compiler found)"


@dataclass
class Installed:
    plugin: Path
    conflist: Path
    kind: str
    #: chained plugins copied into the bin dir by this install
    copied: list[str] = field(default_factory=list)
    #: chained plugins the bin dir already had (the node's own, kept)
    kept: list[str] = field(default_factory=list)
    #: chained plugins found nowhere, left out of the conflist
    missing: list[str] = field(default_factory=list)


def _install_chained(
    name: str, bin_dir: Path, sources: tuple[Path, ...], record: set[str], report: Installed
) -> bool:
    """Make ``bin_dir/name`` exist; True when it does. A node's own copy is kept unless
    this installer placed it (then it is refreshed, e.g. on upgrade)."""
    target = bin_dir / name
    if target.is_file() and os.access(target, os.X_OK) and name not in record:
        report.kept.append(name)
        return True
    source = next((d / name for d in sources if (d / name).is_file()), None)
    if source is None:
        if target.is_file():  # placed by an earlier install; its source is gone now
            report.kept.append(name)
            return True
        report.missing.append(name)
        return False
    _replace(target, source.read_bytes(), 0o755)
    record.add(name)
    report.copied.append(name)
    return True


def _read_record(bin_dir: Path) -> set[str]:
    try:
        names = (bin_dir / RECORD).read_text().split()
    except (FileNotFoundError, UnicodeDecodeError):
        return set()
    return {n for n in names if n == PLUGIN or n in CHAINED}


def install(
    bin_dir: Path,
    conf_dir: Path,
    *,
    portmap: bool = True,
    sources: tuple[Path, ...] = (SHIPPED_DIR, REFERENCE_DIR),
) -> Installed:
    """The plugin, the chained plugins found in ``sources`` (first match wins), and a
    conflist naming only what the bin dir now has."""
    plugin = bin_dir / PLUGIN
    record = _read_record(bin_dir)
    kind = build_plugin(plugin, sources[0] if sources else SHIPPED_DIR)
    record.add(PLUGIN)
    report = Installed(plugin, conf_dir / CONFLIST, kind)
    chain_portmap = portmap and _install_chained("portmap", bin_dir, sources, record, report)
    _replace(bin_dir / RECORD, ("\n".join(sorted(record)) + "\n").encode(), 0o644)
    _replace(
        report.conflist,
        (json.dumps(conflist(portmap=chain_portmap), indent=1) + "\n").encode(),
        0o644,
    )
    return report


def uninstall(bin_dir: Path, conf_dir: Path) -> list[Path]:
    """Remove the conflist and every executable this installer placed (a node's own
    portmap stays); returns what was removed."""
    removed = []
    record = _read_record(bin_dir) | {PLUGIN}
    for path in [conf_dir / CONFLIST, *(bin_dir / n for n in sorted(record)), bin_dir / RECORD]:
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        removed.append(path)
    return removed
