#!/usr/bin/env bash
# Installs aq with its test extras into .venv, then runs ruff, mypy (strict on aq/) and the
# whole test suite. Extra arguments go to pytest, e.g. ./test.sh -k scheduler
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
.venv/bin/ruff check aq tests benchmarks scripts
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
