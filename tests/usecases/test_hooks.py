"""aq.yaml `hooks:`: a person's moves fire the hook of the stage a job moves to, with the event
as JSON on stdin and AQ_* variables; a hook that fails, hangs or is missing never blocks or
fails the move; each run is recorded as a `hook` event, with no push of its own."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aq.errors import ConfigError
from aq.infra.hooks import HookSettings, parse_hooks, run_hook
from aq.store.config import parse_config
from aq.store.hooks import PENDING, run_alert_hook
from aq.store.queue import Queue
from tests.helpers.cli import Ran
from tests.helpers.fleet import fleet_in
from tests.helpers.git import git
from tests.helpers.processes import pid_in, wait_dead
from tests.helpers.queue import T0, configure, events, stage_of, write_job

Aq = Callable[..., Ran]


def hooks(root: Path, on_stage: dict[str, str], **more: Any) -> None:
    configure(root, hooks={"on_stage": on_stage, **more})


def hook_events(root: Path, job_id: str) -> list[dict[str, Any]]:
    return events(root, job_id, "hook")


# --- configuration --------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "said"), [
    ("[notify-send]", "key 'hooks': expected {on_stage: {failed: CMD, ...}, on_alert: CMD, "
                      "timeout: 10s}"),
    ({"on_stages": {}}, "unknown key 'hooks.on_stages' (did you mean 'on_stage'?); known: "
                        "on_stage, on_alert, timeout"),
    ({"on_stage": {"faild": "x"}}, "unknown stage 'hooks.on_stage.faild' (did you mean "
                                   "'failed'?); stages: inbox, building, review, testing, "
                                   "shipped, failed, dead_letter"),
    ({"on_stage": ["failed"]}, "key 'hooks.on_stage': expected a mapping of stages to commands"),
    ({"on_stage": {"failed": 3}}, "key 'hooks.on_stage.failed': expected a shell command (text), "
                                  "got 3"),
    ({"on_alert": ""}, "key 'hooks.on_alert': expected a shell command (text), got ''"),
    ({"timeout": "soon"}, "key 'hooks.timeout': 'soon' is not"),
    ({"timeout": 0}, "key 'hooks.timeout': a time longer than 0s"),
])
def test_a_bad_hooks_setting_is_one_line_naming_the_key(raw: object, said: str) -> None:
    """Every key and stage name under hooks: is checked; a bad one is a ConfigError naming the
    file, the key and what was expected."""
    with pytest.raises(ConfigError) as caught:
        parse_config({"hooks": raw}, "/q/aq.yaml")
    assert str(caught.value).startswith(f"/q/aq.yaml: {said}")
    assert "\n" not in str(caught.value)


def test_hooks_parse_with_a_default_timeout() -> None:
    """Unset, a hook may run 10s; `timeout:` takes a duration as a person writes one."""
    assert parse_hooks(None) is None
    assert parse_hooks({"on_stage": {"failed": "x"}}) == HookSettings({"failed": "x"}, None, 10.0)
    assert parse_hooks({"on_alert": "y", "timeout": "2m"}) == HookSettings({}, "y", 120.0)


def test_the_cli_refuses_a_bad_hooks_setting_in_one_line(aq: Aq, queue_root: Path) -> None:
    """A command on a queue whose aq.yaml has a misspelt stage exits 1 with one line, no traceback."""
    hooks(queue_root, {"shiped": "true"})
    ran = aq("ls")
    assert ran.returncode == 1
    assert ran.stderr.strip().splitlines() == [
        f"aq: {queue_root / 'aq.yaml'}: unknown stage 'hooks.on_stage.shiped' (did you mean "
        "'shipped'?); stages: inbox, building, review, testing, shipped, failed, dead_letter"]


# --- the runner -------------------------------------------------------------------------------

def test_the_runner_feeds_json_on_stdin_and_sets_the_environment(tmp_path: Path) -> None:
    """A hook reads the payload on stdin and its AQ_* variables; a clean exit is ok."""
    run = run_hook("on_stage.review", f'cat > {tmp_path}/in.json; echo "$AQ_JOB_ID" > {tmp_path}/id',
                   {"job": "j1", "text": "hi ☃"}, {"AQ_JOB_ID": "j1"}, cwd=tmp_path, timeout=5)
    assert (run.exit, run.last_line, run.ok) == (0, "", True)
    assert json.loads((tmp_path / "in.json").read_text()) == {"job": "j1", "text": "hi ☃"}
    assert (tmp_path / "id").read_text() == "j1\n"


def test_the_runner_keeps_the_last_stderr_line_scrubbed(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The last line a failing hook wrote on stderr is kept, with a secret (the webhook's URL)
    redacted: it goes into a committed event."""
    monkeypatch.setenv("AQ_WEBHOOK_URL", "https://hooks.example.com/services/T0/B0/s3cr3t")
    run = run_hook("on_stage.failed", 'echo first >&2; echo "no answer from $AQ_WEBHOOK_URL" >&2; '
                   "exit 3", {}, {}, cwd=tmp_path, timeout=5)
    assert (run.exit, run.last_line) == (3, "no answer from [REDACTED]")
    assert run.complaint(5) == "hook on_stage.failed exited 3: no answer from [REDACTED]"


# --- a person's moves ------------------------------------------------------------------------

def test_a_reject_fires_its_hook_with_the_event_on_stdin_and_records_it(
        aq: Aq, queue_root: Path, tmp_path: Path) -> None:
    """`aq reject` runs on_stage.failed once the move is committed: the move's event, the job's
    main fields and a ready line on stdin, AQ_* in its environment; a `hook` event records it."""
    out = tmp_path / "out"
    out.mkdir()
    hooks(queue_root, {"failed": f"cat > {out}/stdin.json; env | grep ^AQ_ | sort > {out}/env; "
                                 f"git log -1 --format=%s > {out}/committed"})
    write_job(queue_root, "j1", "the body", stage="review", title="Fix the login",
              priority="high", lock="db")
    ran = aq("reject", "j1", "--reason", "tests are fake")
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, "j1: review -> failed\n", "")
    got = json.loads((out / "stdin.json").read_text())
    assert got["text"] == "aq: j1 review -> failed (tests are fake): Fix the login"
    assert {k: got[k] for k in ("hook", "job", "title", "from", "to", "why", "queue")} == {
        "hook": "on_stage.failed", "job": "j1", "title": "Fix the login", "from": "review",
        "to": "failed", "why": "tests are fake", "queue": str(queue_root)}
    assert got["event"] == events(queue_root, "j1", "moved")[-1]
    assert got["manifest"] == {"priority": "high", "lock": "db"}
    env = dict(line.split("=", 1) for line in (out / "env").read_text().splitlines())
    assert {k: v for k, v in env.items() if k != "AQ_QUEUE"} == {
        "AQ_EVENT": "moved", "AQ_FROM_STAGE": "review", "AQ_HOOK": "on_stage.failed",
        "AQ_JOB_ID": "j1", "AQ_STAGE": "failed", "AQ_TITLE": "Fix the login"}
    assert env["AQ_QUEUE"] == str(queue_root)
    assert (out / "committed").read_text().startswith("aq: reject j1")  # run after the commit
    hook, = hook_events(queue_root, "j1")
    assert {k: hook[k] for k in ("hook", "exit", "stage", "by", "moved_at")} == {
        "hook": "on_stage.failed", "exit": 0, "stage": "failed",
        "by": got["event"]["by"], "moved_at": got["event"]["ts"]}
    assert "to" not in hook  # a hook moves nothing: the job's last move stays the reject
    assert git(queue_root, "status", "--porcelain", "queue") == ""  # no remote: committed at once
    aq("requeue", "j1")  # inbox has no hook: nothing runs, nothing is recorded
    assert len(hook_events(queue_root, "j1")) == 1


def test_a_failing_hook_is_said_in_one_line_and_the_ship_stands(aq: Aq, queue_root: Path) -> None:
    """`aq ship` with an on_stage.shipped hook that exits 3 ships all the same, says the hook's
    last stderr line once and records exit 3."""
    hooks(queue_root, {"shipped": "echo starting >&2; echo 'smtp: connection refused' >&2; exit 3"})
    write_job(queue_root, "j2", stage="testing")
    ran = aq("ship", "j2")
    assert ran.returncode == 0
    assert ran.stdout == "j2: testing -> shipped\n"
    assert ran.stderr == "aq: hook on_stage.shipped exited 3: smtp: connection refused\n"
    assert stage_of(queue_root, "j2") == "shipped"
    hook, = hook_events(queue_root, "j2")
    assert (hook["exit"], hook["stderr"]) == (3, "smtp: connection refused")


def test_a_hanging_hook_is_stopped_at_its_timeout_with_all_it_started(
        aq: Aq, queue_root: Path, tmp_path: Path) -> None:
    """A hook that never ends is stopped at hooks.timeout, the child it started too; the move
    stands and the event says "timeout"."""
    out = tmp_path / "out"
    out.mkdir()
    hooks(queue_root, {"failed": f"sleep 300 & echo $! > {out}/child; echo $$ > {out}/pid; "
                                 "echo waiting for ever >&2; wait"}, timeout="1s")
    write_job(queue_root, "j3", stage="review")
    ran = aq("reject", "j3", "--reason", "no")
    assert ran.returncode == 0
    assert ran.stderr == ("aq: hook on_stage.failed stopped after its timeout of 1s: "
                          "waiting for ever\n")
    assert stage_of(queue_root, "j3") == "failed"
    pids = [pid_in(out / "pid"), pid_in(out / "child")]
    assert None not in pids
    assert all(wait_dead(pid) for pid in pids if pid)
    hook, = hook_events(queue_root, "j3")
    assert (hook["exit"], hook["stderr"]) == ("timeout", "waiting for ever")
    assert hook["seconds"] >= 1.0


def test_a_missing_hook_command_never_fails_the_move(aq: Aq, queue_root: Path) -> None:
    """A hook whose program is not installed: the shell's 127 and its line are said and
    recorded; the move stands."""
    hooks(queue_root, {"testing": "aq-no-such-notifier --now"})
    write_job(queue_root, "j4", stage="review")
    ran = aq("promote", "j4")
    assert ran.returncode == 0
    assert ran.stdout == "j4: review -> testing\n"
    assert ran.stderr.startswith("aq: hook on_stage.testing exited 127: ")
    assert "aq-no-such-notifier" in ran.stderr and ran.stderr.count("\n") == 1
    assert stage_of(queue_root, "j4") == "testing"
    assert hook_events(queue_root, "j4")[0]["exit"] == 127


# --- with a remote: no push of its own --------------------------------------------------------

def test_a_hook_event_rides_with_the_next_commit_and_costs_no_push(tmp_path: Path) -> None:
    """With a remote, a move's push carries the move alone; its hook event waits in the clone's
    state folder and goes out in the next commit this clone pushes, once."""
    with fleet_in(tmp_path, clones=0) as fleet:
        configure(fleet.seed, hooks={"on_stage": {"failed": "exit 5", "testing": "true"}})
        git(fleet.seed, "commit", "-q", "-m", "hooks", "--", "aq.yaml")
        git(fleet.seed, "push", "-q", "origin", "HEAD:main")
        fleet.drop_jobs({"a": ("echo a", {}), "b": ("echo b", {})})
        git(fleet.seed, "mv", "queue/inbox/a.md", "queue/inbox/b.md", "queue/review/")
        git(fleet.seed, "commit", "-q", "-m", "to review")
        git(fleet.seed, "push", "-q", "origin", "HEAD:main")
        clone = fleet.clone()
        pending = Queue(clone).state_dir / PENDING

        count = int(git(fleet.bare, "rev-list", "--count", "main"))
        ran = fleet.aq(clone, "reject", "a", "--reason", "no")
        assert ran.returncode == 0 and ran.stderr == "aq: hook on_stage.failed exited 5\n"
        assert int(git(fleet.bare, "rev-list", "--count", "main")) == count + 1  # the move alone
        assert fleet.stage("a") == "failed" and fleet.events("a", "hook") == []
        assert pending.exists()

        assert fleet.aq(clone, "promote", "b").returncode == 0
        assert int(git(fleet.bare, "rev-list", "--count", "main")) == count + 2
        hook, = fleet.events("a", "hook")  # rode with b's promote
        assert (hook["hook"], hook["exit"]) == ("on_stage.failed", 5)
        assert pending.exists()  # b's own hook event waits for the next ride
        assert fleet.events("b", "hook") == []

        assert fleet.aq(clone, "requeue", "a").returncode == 0
        assert [e["hook"] for e in fleet.events("b", "hook")] == ["on_stage.testing"]
        assert len(fleet.events("a", "hook")) == 1  # never twice
        assert not pending.exists()


def test_trouble_keeping_a_hook_event_never_makes_a_landed_move_look_failed(
        tmp_path: Path) -> None:
    """The move is on the remote before its hook runs: a state file that cannot be written
    afterwards is said in one line, and the command still succeeds."""
    with fleet_in(tmp_path, clones=0) as fleet:
        configure(fleet.seed, hooks={"on_stage": {"failed": "true"}})
        git(fleet.seed, "commit", "-q", "-m", "hooks", "--", "aq.yaml")
        git(fleet.seed, "push", "-q", "origin", "HEAD:main")
        fleet.drop_jobs({"a": ("echo a", {})})
        clone = fleet.clone()
        pending = Queue(clone).state_dir / PENDING
        pending.mkdir(parents=True)  # in the way of the file the hook's event waits in
        ran = fleet.aq(clone, "cancel", "a")
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.startswith("a: inbox -> failed")
        assert ran.stderr.startswith("aq: hook") and ran.stderr.count("\n") == 1, ran.stderr
        assert fleet.stage("a") == "failed"


# --- alerts -----------------------------------------------------------------------------------

def test_an_alert_hook_gets_the_alert_and_a_failure_is_said(queue_root: Path, tmp_path: Path) -> None:
    """run_alert_hook (for aq.usecases.alerts) runs hooks.on_alert with the alert as JSON and
    AQ_ALERT; a failure is one line to `warn`; no on_alert hook: nothing runs."""
    out = tmp_path / "alert.json"
    said: list[str] = []
    alert = {"kind": "stalled", "job": "j9", "why": "no output for 10m"}
    config = parse_config({"hooks": {"on_alert": f'cat > {out}; echo "$AQ_ALERT $AQ_JOB_ID" >&2; exit 4'}})
    run = run_alert_hook(config, alert, T0, root=queue_root, warn=said.append)
    assert run is not None and (run.exit, run.last_line) == (4, "stalled j9")
    assert said == ["hook on_alert exited 4: stalled j9"]
    got = json.loads(out.read_text())
    assert {k: got[k] for k in ("hook", "text", "kind", "job", "ts", "alert")} == {
        "hook": "on_alert", "text": "aq alert stalled on j9: no output for 10m", "kind": "stalled",
        "job": "j9", "ts": "2026-01-01T12:00:00.000000Z", "alert": alert}
    assert run_alert_hook(parse_config({}), alert, T0, root=queue_root) is None
