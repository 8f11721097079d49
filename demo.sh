#!/usr/bin/env bash
# Installs aq into .venv and runs a demo queue end to end with the shell engine:
# jobs through review, testing, a retry, a dead letter, deps, and the human ship gate.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e .
export PATH="$PWD/.venv/bin:$PATH"
demo=$(mktemp -d "${TMPDIR:-/tmp}/aq-demo.XXXXXX")
echo "== a demo queue in $demo"
aq init "$demo" >/dev/null
cd "$demo"
sed -i.bak 's/^default_engine: claude/default_engine: shell/' aq.yaml && rm -f aq.yaml.bak

aq add --id build-api --title "Build the API" --priority high \
    --body 'mkdir -p out && echo "api v1" > out/api.txt' --verify 'grep -q v1 out/api.txt'
aq add --id write-docs --title "Write the docs (needs the API)" --deps build-api \
    --body 'echo "docs for $(cat out/api.txt)" > out/docs.txt' --verify 'test -s out/docs.txt'
aq add --id design-review --title "Propose a design (a person reviews it)" \
    --body 'echo "a design proposal" > out/design.txt'
cat > flaky.md <<'MD'
---
title: A flaky job that passes on its second attempt
retry: {max: 2, backoff: 1s}
verify: test "$AQ_ATTEMPT" -ge 2
---
echo "attempt $AQ_ATTEMPT"
MD
aq add flaky.md --id flaky
aq add --id always-broken --title "A job that always fails" --retry-max 3 --retry-backoff 1s \
    --body 'echo "error: the widget is broken"; exit 1'
rm flaky.md

echo "== what a worker would take, and why the others wait"
aq next --explain
echo "== two workers drain the queue"
aq run --drain --poll 0.2 --worker demo-a >/dev/null 2>&1 &
aq run --drain --poll 0.2 --worker demo-b 2>&1 | sed 's/^/   /'
wait
echo "== a person reviews and ships"
aq promote design-review
aq ship build-api
aq ls
echo "== the story of one job"
aq show always-broken | sed -n '1,12p'
echo "== done: the queue is in $demo (a git repo: try 'git -C $demo log --oneline')"
