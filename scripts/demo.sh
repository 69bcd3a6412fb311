#!/usr/bin/env bash
# The main job: install everything, build a lab cluster network, prove its hosts reach
# each other (on one L2 segment, and across two segments joined by a router), tear it
# down. Exits non-zero if any host cannot reach another.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
plainnet=.venv/bin/plainnet
lab=demo

cleanup() { "$plainnet" lab down "$lab" >/dev/null 2>&1 || true; }
trap cleanup EXIT
cleanup  # a lab left over by an interrupted run

step() { printf '\n== %s\n' "$*"; }

step "one L2 segment, three hosts (scenario 1's underlay)"
"$plainnet" lab up --name "$lab" --hosts 3
"$plainnet" lab check --lab "$lab"
step "plainnet lab exec host1 -- ping -c 2 10.250.0.3"
"$plainnet" lab exec --lab "$lab" host1 -- ping -n -c 2 10.250.0.3
"$plainnet" lab down "$lab"

step "two L2 segments joined by a router (scenario 5's underlay)"
"$plainnet" lab up --name "$lab" --topology two-segments --hosts 4
"$plainnet" lab check --lab "$lab"
step "plainnet lab exec host1 -- ip route get 10.250.2.2   (crosses the router)"
"$plainnet" lab exec --lab "$lab" host1 -- ip route get 10.250.2.2
"$plainnet" lab down "$lab"

step "demo passed: every lab host reached every other, and the lab is gone"
