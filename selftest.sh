#!/usr/bin/env bash
# A whole queue on one machine, checked end to end with the real `aq` command:
# several workers on one clone, jobs through every stage (a verify failure with a retry,
# a dead letter, a review, a ship, a reject and a requeue), then the final stages are checked.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ -x "$here/.venv/bin/aq" ]; then AQ="$here/.venv/bin/aq"; else AQ=$(command -v aq) || { echo "selftest: no aq installed: run ./test.sh first" >&2; exit 1; }; fi
PY="$(dirname "$(command -v "$AQ")")/python"; [ -x "$PY" ] || PY=python3
work=$(mktemp -d "${TMPDIR:-/tmp}/aq-selftest.XXXXXX")
trap 'rm -rf "$work"' EXIT
fail() { echo "selftest: FAIL: $*" >&2; exit 1; }
aq() { (cd "$work/q" && "$AQ" "$@"); }

"$AQ" init "$work/q" >/dev/null
sed -i.bak -e 's/^default_engine: claude/default_engine: shell/' -e 's/^kill_grace: 10s/kill_grace: 1s/' "$work/q/aq.yaml"
rm -f "$work/q/aq.yaml.bak"

aq add --id pass-verify --body 'echo ok > pass.txt' --verify 'test -f pass.txt' >/dev/null
aq add --id needs-review --body 'echo "for a person"' >/dev/null
aq add --id retry-then-pass --body 'echo attempt $AQ_ATTEMPT' --verify 'test "$AQ_ATTEMPT" -ge 2' >/dev/null
printf -- '---\nretry: {max: 2, backoff: 1s}\n---\n' | cat - <(echo 'echo try $AQ_ATTEMPT') > "$work/r.md"
aq add "$work/r.md" --id retried --verify 'test "$AQ_ATTEMPT" -ge 2' >/dev/null
printf -- '---\nretry: {max: 3, backoff: 1s}\n---\necho "boom $AQ_ATTEMPT"; exit 1\n' > "$work/d.md"
aq add "$work/d.md" --id dead >/dev/null
aq add --id plain-fail --body 'exit 4' >/dev/null
aq add --id after-pass --deps pass-verify --body 'true' --verify 'true' >/dev/null
aq add --id timed-out --timeout 1s --body 'sleep 30' >/dev/null
for n in 1 2 3 4 5 6 7 8; do aq add --id "quick-$n" --lock quick --body "echo $n" --verify true >/dev/null; done
aq lint >/dev/null 2>&1 || fail "lint found problems in a good queue"

# three workers on one clone at once
for w in w1 w2 w3; do aq run --drain --poll 0.2 --worker "$w" >"$work/$w.log" 2>&1 & done
wait

stage() { aq show "$1" --json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["stage"])'; }
expect() { got=$(stage "$1"); [ "$got" = "$2" ] || fail "$1 is in $got, expected $2"; }
expect pass-verify testing
expect needs-review review
expect retry-then-pass failed      # no retry set: the first verify failure fails it
expect retried testing              # failed once, retried after the backoff, passed
expect dead dead_letter             # the same failure twice: stuck
expect plain-fail failed
expect after-pass testing
expect timed-out failed
for n in 1 2 3 4 5 6 7 8; do expect "quick-$n" testing; done

# the human gate and the other moves
aq promote needs-review >/dev/null && expect needs-review testing
aq ship needs-review >/dev/null && expect needs-review shipped
aq reject after-pass --reason "not what we wanted" >/dev/null && expect after-pass failed
aq requeue after-pass >/dev/null && expect after-pass inbox
if aq ship plain-fail 2>/dev/null; then fail "a failed job was shipped"; fi
aq run --once --worker w4 >/dev/null 2>&1 && expect after-pass testing

# every job ran exactly as often as its events say, and the git history is whole
attempts=$(aq ls --json | "$PY" -c 'import json,sys; print(sum(j["attempts"] for j in json.load(sys.stdin)))')
claims=$(cat "$work"/q/queue/.events/*.jsonl | grep -c '"type":"claimed"')
[ "$attempts" = "$claims" ] || fail "attempts ($attempts) and claim events ($claims) disagree"
[ -z "$(git -C "$work/q" status --porcelain -- queue)" ] || fail "uncommitted queue changes left behind"
git -C "$work/q" fsck --no-progress >/dev/null 2>&1 || fail "git fsck found problems"
building=$(aq ls --stage building --json | "$PY" -c 'import json,sys; print(len(json.load(sys.stdin)))')
[ "$building" = 0 ] || fail "$building job(s) left in building"
echo "selftest: 1 passed, 0 failed ($claims attempts over $(ls "$work"/q/queue/.events | wc -l) jobs)"
