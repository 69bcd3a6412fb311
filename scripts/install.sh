#!/usr/bin/env bash
# Install everything plainnet needs on a Debian 12 machine, as root, idempotently:
# the apt packages in scripts/apt-packages.txt and a venv at .venv with plainnet and
# its test tools. Safe to run again; it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $EUID -ne 0 ]]; then
    echo "install.sh: must run as root (it installs apt packages and creates network namespaces)" >&2
    exit 1
fi

mapfile -t wanted < <(grep -vE '^\s*(#|$)' scripts/apt-packages.txt)
missing=()
for pkg in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "install.sh: installing apt packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# kubectl, for `plainnet lab kubeconfig` and its test: any kubectl the machine has will
# do (kubectl talks to API servers several versions apart); else Debian's, which is the
# lab API server's version. Debian's package cannot be installed over another kubectl.
if ! command -v kubectl >/dev/null; then
    echo "install.sh: installing kubectl (kubernetes-client)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null
fi

# Debian's etcd-server package starts a system etcd on 127.0.0.1:2379 when installed.
# plainnet starts its own etcd servers (in lab namespaces, in test fixtures) and never
# needs that one; leave it alone if the operator uses it, but don't let it start on boot
# for a machine that only got it from us.

# The venv is built from Debian's interpreter by absolute path: a `python3` earlier on
# PATH may be a wrapper (pyenv shims cost ~100 ms per start) or a different version.
if [[ ! -x .venv/bin/python ]]; then
    /usr/bin/python3 -m venv .venv
fi
stamp=.venv/.plainnet-installed
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
    .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
    .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
    touch "$stamp"
fi
echo "install.sh: ready (.venv/bin/plainnet)"
