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

SOCKET_NAME = "plainnet-cni"  # abstract: no path, one per network namespace
SUPPORTED_VERSIONS = ("1.0.0", "1.1.0")
LATEST_VERSION = SUPPORTED_VERSIONS[-1]
MAX_REQUEST = 1 << 20
TRY_AGAIN_LATER = 11  # the CNI code for "the agent is not there (yet)"


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
    """The environment and stdin of a request; undecodable environment entries are
    dropped (the request parser then reports what is missing)."""
    env_block, separator, stdin = data.partition(b"\0\0")
    if not separator:  # no CNI_ variable at all: the block is just the terminator
        env_block, stdin = b"", data[1:] if data[:1] == b"\0" else data
    env = {}
    for entry in env_block.split(b"\0"):
        key, equals, value = entry.partition(b"=")
        if equals:
            try:
                env[key.decode()] = value.decode()
            except UnicodeDecodeError:
                continue
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
    ]


_PYTHON_CLIENT = '''#!/usr/bin/python3 -S -E
"""plainnet CNI plugin (fallback without a C compiler): same protocol as shim.c."""
import json, os, socket, sys
if os.environ.get("CNI_COMMAND") == "VERSION":
    print(VERSION_ANSWER)
    sys.exit(0)
config = sys.stdin.buffer.read()
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    sock.connect("\\0" + SOCKET_NAME)
except OSError as exc:
    try:
        version = json.loads(config).get("cniVersion", LATEST_VERSION)
    except ValueError:
        version = LATEST_VERSION
    print(json.dumps({"cniVersion": version, "code": TRY_AGAIN_LATER,
                      "msg": "plainnet agent is not running on this node",
                      "details": f"connect to @{SOCKET_NAME}: {exc.strerror}"}))
    sys.exit(1)
env = b"".join(f"{k}={v}".encode() + b"\\0" for k, v in os.environ.items() if k.startswith("CNI_"))
sock.sendall(env + b"\\0" + config)
sock.shutdown(socket.SHUT_WR)
answer = b""
while chunk := sock.recv(65536):
    answer += chunk
code, _, out = answer.partition(b"\\n")
sys.stdout.buffer.write(out)
sys.exit(int(code or str(TRY_AGAIN_LATER).encode()))
'''


def python_client() -> str:
    """The fallback plugin's source, with this module's constants filled in."""
    constants = (
        f"SOCKET_NAME = {SOCKET_NAME!r}\n"
        f"VERSION_ANSWER = {version_answer()!r}\n"
        f"LATEST_VERSION = {LATEST_VERSION!r}\n"
        f"TRY_AGAIN_LATER = {TRY_AGAIN_LATER}\n"
    )
    head, _, body = _PYTHON_CLIENT.partition('"""\n')
    docstring, _, code = body.partition('"""\n')
    return f'{head}"""\n{docstring}"""\n{constants}{code}'
