#!/usr/bin/env bash
# Installs aq with its test extras into .venv, then runs ruff, mypy (strict on aq/), the layer
# contract (import-linter, see pyproject.toml) and the whole test suite in four processes
# (pytest-xdist). Extra arguments go to pytest, e.g. ./test.sh -k scheduler, or ./test.sh -n 0
# to run in one process
set -euo pipefail
cd "$(dirname "$0")"
# Real programs the tests drive through their own CLIs, pinned to versions that run on Node 20
# (npm registry): Backlog.md, a tracker; claude-code, codex and gemini-cli, agent CLIs run
# against the tests' fake model APIs. Installed once into .tools/; a test that needs one that
# could not be installed is skipped and says so. npm runs beside pip (the network and the
# other core), and the tests wait for it.
npm_pins="backlog.md@1.52.0 @anthropic-ai/claude-code@2.1.197 @openai/codex@0.171.0 @google/gemini-cli@0.61.0"
npm_bins="backlog claude codex gemini"
missing_bins=""
for bin in $npm_bins; do
    [ -x ".tools/node_modules/.bin/$bin" ] || missing_bins="$missing_bins $bin"
done
tools=
if [ -n "$missing_bins" ]; then
    {
        if command -v npm >/dev/null 2>&1; then
            # shellcheck disable=SC2086 # one word per package
            npm install --silent --no-fund --no-audit --prefix .tools $npm_pins >/dev/null 2>&1 \
                || echo "test.sh: could not install$missing_bins from npm; the tests that need them will be skipped" >&2
        else
            echo "test.sh: npm is not installed, so$missing_bins cannot be; the tests that need them will be skipped" >&2
        fi
    } &
    tools=$!
fi
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
# uv (from PyPI, into the venv) installs the test extras in about 5 s, where pip spends 25 s
# resolving them; pip does it wherever uv cannot be had or cannot reach an index
if ! { { [ -x .venv/bin/uv ] || .venv/bin/python -m pip install -q --disable-pip-version-check uv; } \
        && .venv/bin/uv pip install -q --python .venv/bin/python -e '.[test]'; } >/dev/null 2>&1; then
    .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
fi
# The tests start thousands of `python -m aq` processes: let Python keep the bytecode it
# compiles, compiled once here, or an environment with PYTHONDONTWRITEBYTECODE=1 (as some CI
# images set) compiles aq's modules again in every one of them (about 40 ms each). pytest
# keeps its rewritten test modules the same way: collected once here, on the core the checks
# below leave idle, each of the four test processes reads them (7 s of collection, not 4 x 7)
unset PYTHONDONTWRITEBYTECODE
{ .venv/bin/python -m compileall -q aq tests
  .venv/bin/python -m pytest --collect-only -q -p no:cacheprovider; } >/dev/null 2>&1 &
warm=$!
.venv/bin/ruff check aq tests benchmarks scripts
.venv/bin/mypy
# the layers: quiet when kept, the whole report when a contract is broken
layers=$(.venv/bin/lint-imports --no-cache 2>&1) || { echo "$layers"; exit 1; }
wait "$warm" || true  # a collection error is the test run's to report
[ -z "$tools" ] || wait "$tools"
# four processes on two cores: the fleet tests spend much of their time waiting on leases,
# pacing windows and workers, and must hold under load. The whole suite on this 2-core machine:
# 468 s with two, 297-353 s with three (the cores idle a quarter of the time), 249 s with four
.venv/bin/python -m pytest -n 4 --dist worksteal "$@"
