#!/usr/bin/env bash
# Installs aq with its test extras into .venv, then runs ruff, mypy (strict on aq/) and the
# whole test suite. Extra arguments go to pytest, e.g. ./test.sh -k scheduler
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
# Backlog.md, a real tracker the tracker-bridge tests drive through its own CLI (npm registry)
if [ ! -x .tools/node_modules/.bin/backlog ] && command -v npm >/dev/null 2>&1; then
    npm install --silent --no-fund --no-audit --prefix .tools backlog.md@1.52.0 >/dev/null 2>&1 \
        || echo "test.sh: could not install backlog.md from npm; its tests will be skipped" >&2
fi
.venv/bin/ruff check aq tests benchmarks scripts
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
