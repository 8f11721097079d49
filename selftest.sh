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

# --- one clone: three workers at once ----------------------------------------------------
one_clone() {
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
    echo "selftest: start $(date +%T)"
    for w in w1 w2 w3; do aq run --drain --poll 0.2 --worker "$w" >"$work/$w.log" 2>&1 & done
    wait; echo "selftest: workers done at $(date +%T)"

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
    echo "selftest: one clone: $claims attempts over $(ls "$work"/q/queue/.events | wc -l) jobs, all as expected"
}

# --- a fleet: a bare remote, two clones, workers in both -------------------------------------
fleet() {
    git init -q --bare -b main "$work/remote.git"
    "$AQ" init "$work/seed" >/dev/null
    sed -i.bak -e 's/^default_engine: claude/default_engine: shell/' -e 's/^kill_grace: 10s/kill_grace: 1s/' "$work/seed/aq.yaml"
    rm -f "$work/seed/aq.yaml.bak"
    git -C "$work/seed" commit -qam "selftest: shell engine"
    git -C "$work/seed" remote add origin "$work/remote.git"
    git -C "$work/seed" push -q origin HEAD:main
    git clone -q "$work/remote.git" "$work/a"
    git clone -q "$work/remote.git" "$work/b"
    ina() { (cd "$work/a" && "$AQ" "$@"); }
    inb() { (cd "$work/b" && "$AQ" "$@"); }

    ina add --id f-pass --body 'echo built' --verify true >/dev/null
    inb add --id f-review --body 'echo "a design"' >/dev/null
    printf -- '---\nretry: {max: 2, backoff: 1s}\nverify: test "$AQ_ATTEMPT" -ge 2\n---\necho try $AQ_ATTEMPT\n' > "$work/fr.md"
    ina add "$work/fr.md" --id f-retried >/dev/null
    printf -- '---\nretry: {max: 3, backoff: 1s}\n---\necho "boom"; exit 1\n' > "$work/fd.md"
    inb add "$work/fd.md" --id f-dead >/dev/null
    ina add --id f-after --deps f-pass --body 'true' --verify true >/dev/null
    for n in 1 2 3 4 5 6; do inb add --id "f-quick-$n" --body "echo $n" --verify true >/dev/null; done
    inb add --key same-key --id f-keyed --body 'true' --verify true >/dev/null
    ina add --key same-key --id f-keyed --body "true" --verify true >/dev/null 2>&1  # a no-op: same key, same content

    echo "selftest: fleet start $(date +%T)"
    for w in a1 a2; do ina run --drain --poll 0.2 --lease-ttl 20s --worker "fleet-$w" >"$work/$w.log" 2>&1 & done
    inb run --drain --poll 0.2 --lease-ttl 20s --worker fleet-b1 >"$work/b1.log" 2>&1 &
    wait; echo "selftest: workers done at $(date +%T)"

    git clone -q "$work/remote.git" "$work/check"
    inc() { (cd "$work/check" && "$AQ" "$@"); }
    fstage() { inc show "$1" --json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["stage"])'; }
    fexpect() { got=$(fstage "$1"); [ "$got" = "$2" ] || fail "fleet: $1 is in $got, expected $2"; }
    fexpect f-pass testing
    fexpect f-review review
    fexpect f-retried testing
    fexpect f-dead dead_letter
    fexpect f-after testing
    fexpect f-keyed testing
    for n in 1 2 3 4 5 6; do fexpect "f-quick-$n" testing; done
    inb promote f-review >/dev/null
    ina ship f-pass >/dev/null
    (cd "$work/check" && git pull -q)
    fexpect f-review testing
    fexpect f-pass shipped
    inc fsck --history >/dev/null 2>&1 || { inc fsck --history; fail "fleet: aq fsck --history found problems"; }
    git -C "$work/remote.git" fsck --no-progress >/dev/null 2>&1 || fail "fleet: git fsck of the remote found problems"
    main_commits=$(git -C "$work/remote.git" rev-list --count main)
    beats=$(git -C "$work/remote.git" for-each-ref refs/aq/workers | wc -l)
    [ "$beats" -ge 2 ] || fail "fleet: expected heartbeat refs of the workers, found $beats"
    fleet_claims=$(cat "$work"/check/queue/.events/*.jsonl | grep -c '"type":"claimed"')
    echo "selftest: fleet: $fleet_claims claims over 2 clones, $main_commits commits on main, $beats heartbeat refs off main, fsck --history clean"
}

# the two halves share nothing: they run at once, each saying what it checked (or why not)
( one_clone ) >"$work/one-clone.out" 2>&1 & one=$!
( fleet ) >"$work/fleet.out" 2>&1 & two=$!
passed=0; failed=0
for half in "$one:one-clone" "$two:fleet"; do
    if wait "${half%%:*}"; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
    cat "$work/${half#*:}.out"
done
echo "selftest: $passed passed, $failed failed"
[ "$failed" = 0 ]
