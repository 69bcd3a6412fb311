"""The wire protocol between the CNI plugin executable and the agent, defined once.

The plugin (``shim.c``, or the fallback Python client) connects to the abstract unix
socket ``@plainnet-cni`` of the caller's network namespace (the node's) and sends the
``CNI_*`` environment as NUL-terminated ``KEY=value`` strings, one empty string, then
the network configuration from stdin; then it shuts its write side. The agent answers
with the exit code in ASCII, a newline, and what the plugin prints on stdout.

VERSION is answered by the plugin itself, so a runtime can probe it while the agent
is down. The C shim gets :data:`SOCKET_NAME`, the version answer and the fallback
version from here as ``-D`` definitions when it is compiled; the Python client is
rendered from :data:`_PYTHON_CLIENT` with the same values — nothing is written twice.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from plainnet.cni.errors import INVALID_NETWORK_CONFIG, PLUGIN_NOT_AVAILABLE, TRY_AGAIN_LATER

SOCKET_NAME = "plainnet-cni"  # abstract: no path, one per network namespace
SUPPORTED_VERSIONS = ("1.0.0", "1.1.0")
LATEST_VERSION = SUPPORTED_VERSIONS[-1]
MAX_REQUEST = 1 << 20


def socket_address() -> str:
    return "\0" + SOCKET_NAME


def version_answer() -> str:
    return json.dumps(
        {"cniVersion": LATEST_VERSION, "supportedVersions": list(SUPPORTED_VERSIONS)},
        separators=(",", ":"),
    )


def encode_request(env: Mapping[str, str], stdin: bytes) -> bytes:
    block = b"".join(f"{k}={v}".encode() + b"\0" for k, v in env.items() if k.startswith("CNI_"))
    return block + b"\0" + stdin


def decode_request(data: bytes) -> tuple[dict[str, str], bytes]:
    """The environment and stdin of a request. Bytes that are not UTF-8 are kept as
    surrogate escapes, so the request parser can refuse the variable by name."""
    env_block, separator, stdin = data.partition(b"\0\0")
    if not separator:  # no CNI_ variable at all: the block is just the terminator
        env_block, stdin = b"", data[1:] if data[:1] == b"\0" else data
    env = {}
    for entry in env_block.split(b"\0"):
        key, equals, value = entry.partition(b"=")
        if equals:
            env[key.decode(errors="surrogateescape")] = value.decode(errors="surrogateescape")
    return env, stdin


def encode_answer(code: int, stdout: bytes) -> bytes:
    return f"{code}\n".encode() + stdout


def shim_defines() -> list[str]:
    """The C shim's compile-time constants."""
    return [
        f"-DSOCKET_NAME={json.dumps(SOCKET_NAME)}",
        f"-DVERSION_ANSWER={json.dumps(version_answer())}",
        f"-DLATEST_VERSION={json.dumps(LATEST_VERSION)}",
        f"-DTRY_AGAIN_LATER={TRY_AGAIN_LATER}",
        f"-DPLUGIN_NOT_AVAILABLE={PLUGIN_NOT_AVAILABLE}",
        f"-DINVALID_NETWORK_CONFIG={INVALID_NETWORK_CONFIG}",
        f"-DMAX_REQUEST={MAX_REQUEST}",
    ]


_PYTHON_CLIENT = '''#!/usr/bin/python3 -S -E
"""plainnet CNI plugin (fallback without a C compiler): same protocol as shim.c."""
import json, os, socket, sys
if os.environ.get("CNI_COMMAND") == "VERSION":
    print(VERSION_ANSWER)
    sys.exit(0)
config = sys.stdin.buffer.read()
try:
    version = json.loads(config).get("cniVersion", LATEST_VERSION)
except (ValueError, AttributeError):
    version = LATEST_VERSION


def fail(code, msg, details):
    print(json.dumps({"cniVersion": version, "code": code, "msg": msg, "details": details}))
    sys.exit(1)


if len(config) > MAX_REQUEST:
    fail(INVALID_NETWORK_CONFIG, "network configuration too large", f"at most {MAX_REQUEST} bytes")
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    sock.connect("\\0" + SOCKET_NAME)
except OSError as exc:
    status = os.environ.get("CNI_COMMAND") == "STATUS"
    fail(PLUGIN_NOT_AVAILABLE if status else TRY_AGAIN_LATER,
         "plainnet agent is not running on this node",
         f"connect to @{SOCKET_NAME}: {exc.strerror}; start the agent (plainnet agent) and retry")
env = b"".join(k + b"=" + v + b"\\0" for k, v in os.environb.items() if k.startswith(b"CNI_"))
answer = b""
try:
    sock.sendall(env + b"\\0" + config)
    sock.shutdown(socket.SHUT_WR)
except OSError:
    pass  # the agent may have answered before it closed: read on
try:
    while chunk := sock.recv(65536):
        answer += chunk
except OSError:
    pass
code, newline, out = answer.partition(b"\\n")
if not newline:
    fail(TRY_AGAIN_LATER, "plainnet agent went away; retry",
         "the agent closed the connection without an answer")
sys.stdout.buffer.write(out)
sys.exit(int(code))
'''


def python_client() -> str:
    """The fallback plugin's source, with this module's constants filled in."""
    constants = (
        f"SOCKET_NAME = {SOCKET_NAME!r}\n"
        f"VERSION_ANSWER = {version_answer()!r}\n"
        f"LATEST_VERSION = {LATEST_VERSION!r}\n"
        f"TRY_AGAIN_LATER = {TRY_AGAIN_LATER}\n"
        f"PLUGIN_NOT_AVAILABLE = {PLUGIN_NOT_AVAILABLE}\n"
        f"INVALID_NETWORK_CONFIG = {INVALID_NETWORK_CONFIG}\n"
        f"MAX_REQUEST = {MAX_REQUEST}\n"
    )
    shebang, docstring, code = _PYTHON_CLIENT.split("\n", 2)
    return f"{shebang}\n{docstring}\n{constants}{code}"
