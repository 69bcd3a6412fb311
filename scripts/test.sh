#!/usr/bin/env bash
# Install everything and run the whole test suite (lint, unit, store, lab, CLI), as root.
# Extra arguments go to pytest, e.g. `scripts/test.sh -k lab -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/plainnet lab down --all >/dev/null  # leftovers of an interrupted run
echo "== ruff"
.venv/bin/ruff check src tests bench
.venv/bin/ruff format --check src tests bench
echo "== pytest"
status=0
.venv/bin/python -m pytest --durations=20 "$@" || status=$?
if [[ $status -eq 5 ]]; then
    echo "test.sh: pytest collected no tests" >&2
    exit 1
fi
exit $status
