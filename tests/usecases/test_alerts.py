"""`aq.usecases.alerts`: the alerts a queue's jobs, logs and heartbeats give (hand-written event
logs in a real queue, time passed in), raising each once per clone, and `aq alerts`."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aq.core.alert_rules import AlertRules, parse_alert_rules
from aq.core.events import iso, parse_iso
from aq.errors import ConfigError
from aq.store.config import parse_config
from aq.store.hooks import PENDING
from aq.store.queue import Queue
from aq.usecases.alerts import (
    ALERTED_FILE,
    FORGET_AFTER,
    Alert,
    Signs,
    _first_to_raise,
    claim_new,
    evaluate,
    speaks_for_fleet,
)
from aq.usecases.fleet import WorkerRow
from aq.worker.runner import Worker
from tests.helpers.cli import Ran
from tests.helpers.queue import T0, configure, write_job

Aq = Callable[..., Ran]
MINUTE, HOUR = 60.0, 3600.0


def at(seconds: float) -> str:
    return iso(T0 + timedelta(seconds=seconds))


def write_log(root: Path, job_id: str, *events: dict[str, object]) -> None:
    folder = root / "queue" / ".events"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{job_id}.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))


def claimed(t: float, attempt: int = 1, by: str = "w1") -> dict[str, object]:
    return {"ts": at(t), "type": "claimed", "by": by, "from": "inbox", "to": "building",
            "attempt": attempt, "token": f"{attempt}.{by}"}


def finished(t: float, to: str, outcome: str, attempt: int = 1, by: str = "w1",
             **extra: object) -> dict[str, object]:
    return {"ts": at(t), "type": "finished", "by": by, "from": "building", "to": to,
            "action": "fail", "attempt": attempt, "token": f"{attempt}.{by}", "outcome": outcome,
            **extra}


def alerts_at(root: Path, seconds: float, signs: Signs | None = None) -> tuple[Alert, ...]:
    queue = Queue(root)
    return evaluate(queue.snapshot(), queue.config, T0 + timedelta(seconds=seconds),
                    signs or Signs())


def kinds(found: tuple[Alert, ...]) -> list[tuple[str, str]]:
    return [(alert.kind, alert.subject) for alert in found]


# --- aq.yaml alerts: ---------------------------------------------------------------------------

def test_the_alert_rules_have_defaults_and_each_kind_can_be_switched_off() -> None:
    """Without `alerts:` every kind is on at its default; `off` (or false) switches one off."""
    assert parse_config({}).alerts == AlertRules()
    rules = parse_config({"alerts": {"stall": "10m", "failure_spike": "3/30m", "offline": "off",
                                     "dead_letter": False, "budget": "on"}}).alerts
    assert rules == AlertRules(stall=600.0, failure_spike=(3, 1800.0), offline=None,
                               budget=True, dead_letter=False)
    assert parse_alert_rules({"failure_spike": "off"}).failure_spike is None
    # an idle machine beats once a lease TTL: it is never offline sooner than two
    assert AlertRules(offline=60.0).offline_after(600.0) == 1200.0


@pytest.mark.parametrize(("raw", "said"), [
    ({"alerts": "loud"}, "aq.yaml: key 'alerts': expected {stall: 30m"),
    ({"alerts": {"stal": "5m"}}, "aq.yaml: unknown key 'alerts.stal'; known: stall,"),
    ({"alerts": {"failure_spike": 5}}, "aq.yaml: key 'alerts.failure_spike': 5 is not a count of "
                                       "failures in a window, such as 5/1h, or off"),
    ({"alerts": {"failure_spike": "0/1h"}}, "key 'alerts.failure_spike': '0/1h' is not a count"),
    ({"alerts": {"stall": "soon"}}, "aq.yaml: key 'alerts.stall': 'soon' is not a duration"),
    ({"alerts": {"dead_letter": "maybe"}}, "key 'alerts.dead_letter': 'maybe' is neither on nor off"),
])
def test_a_bad_alerts_setting_is_one_error_naming_the_key(raw: dict[str, object], said: str) -> None:
    """A wrong value under `alerts:` is a ConfigError naming the file, the key and what to write."""
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, "aq.yaml")
    assert said in str(caught.value) and "\n" not in str(caught.value)


def test_aq_alerts_with_a_bad_setting_says_so_in_one_line(queue_root: Path, aq: Aq) -> None:
    """`aq alerts` on an aq.yaml with a bad alerts value exits 1 with one line, no traceback."""
    configure(queue_root, alerts={"offline": "-"})
    done = aq("alerts")
    assert done.returncode == 1
    assert done.stderr.startswith("aq: ") and done.stderr.count("\n") == 1
    assert "alerts.offline" in done.stderr and "Traceback" not in done.stderr


# --- the read model ----------------------------------------------------------------------------

def test_a_job_building_well_past_its_timeout_is_stalled_with_one_key_per_attempt(
        queue_root: Path) -> None:
    """Past timeout + kill grace + a minute a building job is stalled, since its timeout; the key
    stays the same while it lasts."""
    configure(queue_root, timeout="1h")
    write_job(queue_root, "slow", stage="building")
    write_log(queue_root, "slow", claimed(0))
    assert alerts_at(queue_root, HOUR + 2 + MINUTE - 1) == ()  # its worker may be recording it
    [first] = alerts_at(queue_root, HOUR + 5 * MINUTE)
    [later] = alerts_at(queue_root, 3 * HOUR)
    assert (first.kind, first.subject, first.job, first.since) == ("stalled", "slow", "slow", at(HOUR))
    assert first.key == later.key == "stalled:slow:1"
    assert first.message == "slow (attempt 1, w1): building for 1h05m, past its timeout of 1h"


def test_a_job_whose_log_is_quiet_or_whose_worker_is_silent_is_stalled(queue_root: Path) -> None:
    """No log output for `stall`, or its worker's heartbeat silent that long, stalls a job; less
    does not."""
    configure(queue_root, alerts={"stall": "10m"})
    for job_id in ("quiet", "orphan"):
        write_job(queue_root, job_id, stage="building")
        write_log(queue_root, job_id, claimed(0, by=f"w-{job_id}"))
    worker = WorkerRow("w-orphan", "h1", 11 * MINUTE, at(0), ("orphan",), False)
    found = alerts_at(queue_root, 20 * MINUTE, Signs(workers=(worker,), log_quiet={"quiet": 700.0}))
    assert [(a.subject, a.message.split(": ", 1)[1], a.since) for a in found] == [
        ("quiet", "no log output for 11m40s", at(20 * MINUTE - 700)),
        ("orphan", "its worker's heartbeat is silent for 11m", at(9 * MINUTE)),
    ]
    calm = Signs(workers=(WorkerRow("w-orphan", "h1", 5.0, None, (), False),),
                 log_quiet={"quiet": 599.0})
    assert alerts_at(queue_root, 20 * MINUTE, calm) == ()
    configure(queue_root, alerts={"stall": "off"})
    assert alerts_at(queue_root, 20 * MINUTE, Signs(log_quiet={"quiet": 1e6})) == ()


def test_failures_of_one_engine_and_profile_within_the_window_are_a_spike(queue_root: Path) -> None:
    """`failure_spike: 3/1h`: three failed attempts of one engine/profile within the hour alert,
    keyed by the hour's slot; successes, interruptions, older failures and other groups do not
    count."""
    configure(queue_root, alerts={"failure_spike": "3/1h"})
    (queue_root / "profiles" / "coder.md").write_text("---\nengine: shell\n---\nYou code.\n")
    for n, (outcome, ended) in enumerate([("verify_failed", -10), ("engine_failed", -20),
                                          ("timeout", -30 * MINUTE), ("verify_failed", -2 * HOUR),
                                          ("interrupted", -5), ("ok", -5)]):
        write_job(queue_root, f"s{n}", stage="failed")
        write_log(queue_root, f"s{n}", claimed(ended - 60), finished(ended, "failed", outcome))
    write_job(queue_root, "other", stage="failed", profile="coder")
    write_log(queue_root, "other", claimed(-70), finished(-10, "failed", "verify_failed"))
    [spike] = alerts_at(queue_root, 0)
    assert (spike.kind, spike.subject, spike.since) == ("failure_spike", "shell", at(-30 * MINUTE))
    assert spike.message == "3 failed attempts of shell in the last 1h (alerting at 3)"
    assert spike.key == f"failure_spike:shell:{int(T0.timestamp() // HOUR)}"
    configure(queue_root, alerts={"failure_spike": "4/1h"})
    assert alerts_at(queue_root, 0) == ()


def test_a_crossed_queue_budget_and_a_job_stopped_at_its_own_are_budget_alerts(
        queue_root: Path) -> None:
    """The day's runs over aq.yaml `budget:` alert once a day; a failed job whose last attempt
    crossed its budget alerts once per attempt."""
    configure(queue_root, budget={"usd_per_day": 1})
    write_job(queue_root, "dear", stage="failed")
    write_log(queue_root, "dear", claimed(-100),
              finished(-10, "failed", "budget_exceeded", usage={"cost_usd": 1.5},
                       why="budget.usd crossed: this attempt cost $1.5000 of $1.0000 left"))
    found = alerts_at(queue_root, 0)
    assert [(a.kind, a.key) for a in found] == [("budget", "budget:queue:2026-01-01"),
                                                ("budget", "budget:dear:1")]
    assert found[0].message.startswith("budget: runs finished on 2026-01-01 (UTC) cost $1.50")
    assert found[1].message == ("dear stopped at its budget: budget.usd crossed: this attempt "
                                "cost $1.5000 of $1.0000 left")
    assert kinds(alerts_at(queue_root, 86400)) == [("budget", "dear")]  # a new day
    configure(queue_root, alerts={"budget": "off"})
    assert alerts_at(queue_root, 0) == ()


def test_a_machine_silent_without_a_goodbye_is_offline(queue_root: Path) -> None:
    """Workers of one machine silent past `offline` (and two lease TTLs) are one alert naming
    them and their jobs; a machine that said goodbye, or beats, is not."""
    configure(queue_root, alerts={"offline": "30m"}, lease_ttl="10m")
    rows = (WorkerRow("a-1", "hostA", 40 * MINUTE, at(-40 * MINUTE), ("job-x",), False),
            WorkerRow("a-2", "hostA", 40 * MINUTE, at(-40 * MINUTE), (), False),
            WorkerRow("b-1", "hostB", 50 * MINUTE, at(-50 * MINUTE), (), True),  # stopped
            WorkerRow("c-1", "hostC", 20 * MINUTE, at(-20 * MINUTE), (), False),
            WorkerRow("d-1", "hostD", None, None, (), False))  # first seen just now
    [offline] = alerts_at(queue_root, 0, Signs(workers=rows))
    assert (offline.kind, offline.subject, offline.since) == ("machine_offline", "hostA",
                                                               at(-40 * MINUTE))
    assert offline.key == f"machine_offline:hostA:{at(-40 * MINUTE)}"
    assert offline.message == "hostA: no heartbeat or commit for 40m (worker a-1, a-2), holding job-x"
    configure(queue_root, lease_ttl="30m")  # 40m is less than two TTLs
    assert alerts_at(queue_root, 0, Signs(workers=rows)) == ()


def test_the_first_idle_worker_by_name_speaks_for_the_fleet() -> None:
    """Alerts about no job are raised by one worker of the fleet: the first by name of those
    idle and heard from lately; alone (no heartbeats) a worker speaks for itself."""
    rows = (WorkerRow("a-busy", "h1", 5.0, None, ("job-x",), False),
            WorkerRow("b-gone", "h2", 900.0, None, (), False),  # silent too long
            WorkerRow("c-stopping", "h2", 1.0, None, (), True),
            WorkerRow("d-idle", "h3", 3.0, None, (), False),
            WorkerRow("e-idle", "h3", 3.0, None, (), False))
    assert [speaks_for_fleet(rows, me, 600.0) for me in ("a-busy", "d-idle", "e-idle")] == \
        [False, True, False]
    assert speaks_for_fleet(None, "anyone", 600.0)
    assert not speaks_for_fleet((), "me", 600.0)  # its own beat not seen yet: a later look


def test_a_dead_letter_is_an_alert_keyed_by_its_move(queue_root: Path) -> None:
    """A job in dead_letter is an alert saying why, keyed by when it went there."""
    write_job(queue_root, "dead", stage="dead_letter")
    write_log(queue_root, "dead", claimed(-100),
              finished(-50, "dead_letter", "verify_failed", why="retries used up"))
    write_job(queue_root, "fine", stage="testing")
    [dead] = alerts_at(queue_root, 0)
    assert (dead.kind, dead.key, dead.since) == ("dead_letter", f"dead_letter:dead:{at(-50)}", at(-50))
    assert dead.message == "dead is a dead letter: retries used up"
    assert dead.to_json()["job"] == "dead"
    configure(queue_root, alerts={"dead_letter": "off"})
    assert alerts_at(queue_root, 0) == ()


# --- raising once --------------------------------------------------------------------------------

def alert(key: str) -> Alert:
    return Alert("dead_letter", key, key, f"{key} is a dead letter", None, key)


def test_a_jobs_alert_is_raised_by_whoever_noted_it_first_and_again_by_it_alone(
        queue_root: Path) -> None:
    """The `alerted` note decides: the first worker to note it raises it; another finds the
    note and does not; the noting worker finds its own note (a push that did not say whether
    it landed) and raises it then."""
    write_job(queue_root, "doomed", stage="dead_letter")
    queue = Queue(queue_root)
    alert = Alert("dead_letter", "dead_letter:doomed:", "doomed", "doomed is a dead letter",
                  None, "doomed")
    said: list[str] = []
    assert _first_to_raise(queue, alert, T0, "w-first", said.append)
    assert not _first_to_raise(queue, alert, T0, "w-other", said.append)
    assert _first_to_raise(queue, alert, T0, "w-first", said.append)
    notes = [line for line in (queue_root / "queue/.events/doomed.jsonl").read_text().splitlines()
             if '"alerted"' in line]
    assert len(notes) == 1 and '"by": "w-first"' in notes[0].replace('":"', '": "')
    assert said == []


def test_each_key_is_raised_once_per_clone_and_forgotten_a_month_after_it_closed(
        tmp_path: Path) -> None:
    """claim_new gives each key once (at most `most` a look), keeps open keys for ever and
    forgets a closed one FORGET_AFTER after it was raised."""
    now = T0
    assert claim_new(tmp_path, (alert("a"), alert("b"), alert("c")), now, most=2) == (
        alert("a"), alert("b"))
    assert claim_new(tmp_path, (alert("a"), alert("b"), alert("c")), now) == (alert("c"),)
    assert claim_new(tmp_path, (alert("a"),), now) == ()
    later = now + timedelta(seconds=FORGET_AFTER + 1)
    assert claim_new(tmp_path, (alert("a"),), later) == ()  # still open: never raised again
    assert set(json.loads((tmp_path / ALERTED_FILE).read_text())) == {"a"}
    assert claim_new(tmp_path, (alert("b"),), later) == (alert("b"),)  # closed, forgotten, back


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_idle_worker_hands_each_new_alert_to_the_on_alert_hook_once(
        queue_root: Path, tmp_path: Path) -> None:
    """Two idle workers of one clone raise a dead letter once: its JSON on the hook's stdin,
    its kind and job in AQ_* variables, the run waiting to be recorded on the job; a later
    look raises only what is new."""
    ledger = tmp_path / "alerts.jsonl"
    hook = f'cat >> {ledger}; echo "$AQ_ALERT $AQ_JOB_ID" >> {ledger}.env'
    configure(queue_root, hooks={"on_alert": hook}, alerts={"offline": "off"})
    write_job(queue_root, "dead", stage="dead_letter")
    write_log(queue_root, "dead", claimed(-100), finished(-50, "dead_letter", "timeout"))
    clock, said = Clock(), list[str]()
    now = T0 + timedelta(minutes=1)
    first, second = (Worker(Queue(queue_root), worker_id=name, monotonic=clock, say=said.append,
                            now=lambda: now) for name in ("w1", "w2"))
    first.upkeep.idle_turn()
    second.upkeep.idle_turn()
    [raised] = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert (raised["hook"], raised["kind"], raised["job"]) == ("on_alert", "dead_letter", "dead")
    assert raised["text"] == "aq alert dead_letter: dead is a dead letter: timeout"
    assert raised["alert"]["key"] == f"dead_letter:dead:{at(-50)}"
    assert ledger.with_suffix(".jsonl.env").read_text() == "dead_letter dead\n"
    assert said == ["w1: alert dead_letter: dead is a dead letter: timeout"]
    [waiting] = (Queue(queue_root).state_dir / PENDING).read_text().splitlines()
    assert json.loads(waiting)["job"] == "dead"
    assert json.loads(waiting)["event"] | {"seconds": 0, "id": ""} == {
        "ts": iso(now), "type": "hook", "by": "w1", "hook": "on_alert", "exit": 0,
        "seconds": 0, "alert": "dead_letter", "id": ""}
    write_job(queue_root, "dead2", stage="dead_letter")
    write_log(queue_root, "dead2", claimed(-100), finished(-40, "dead_letter", "timeout"))
    second.upkeep.idle_turn()  # looked less than a minute ago
    assert len(ledger.read_text().splitlines()) == 1
    clock.now += 60
    second.upkeep.idle_turn()
    assert [json.loads(line)["job"] for line in ledger.read_text().splitlines()] == ["dead", "dead2"]
    assert said[-1] == "w2: alert dead_letter: dead2 is a dead letter: timeout"


def test_without_an_on_alert_hook_a_worker_does_not_look(queue_root: Path) -> None:
    """No hooks.on_alert: an idle worker raises nothing and keeps no record."""
    write_job(queue_root, "dead", stage="dead_letter")
    worker = Worker(Queue(queue_root), worker_id="w", monotonic=Clock(), say=lambda _: None,
                    now=lambda: T0)
    worker.upkeep.idle_turn()
    assert not (Queue(queue_root).state_dir / ALERTED_FILE).exists()


# --- aq alerts -----------------------------------------------------------------------------------

def test_aq_alerts_lists_the_alerts_and_check_exits_1_when_there_are_some(
        queue_root: Path, aq: Aq) -> None:
    """No alert: 'no alerts', exit 0 even with --check; a dead letter: a line, its JSON, and
    exit 1 under --check."""
    done = aq("alerts", "--check")
    assert (done.returncode, done.stdout) == (0, "no alerts\n")
    assert json.loads(aq("alerts", "--json").stdout) == {"alerts": [], "remark": None}
    write_job(queue_root, "doomed", "exit 3", retry={"max": 1, "backoff": "0s"})
    assert aq("run", "--drain").returncode == 0
    done = aq("alerts")
    assert done.returncode == 0
    [line] = done.stdout.splitlines()
    assert line.startswith("dead_letter") and line.endswith("doomed is a dead letter: stuck: "
                                                            "the same failure twice in a row")
    assert aq("alerts", "--check").returncode == 1
    [found] = json.loads(aq("alerts", "--json").stdout)["alerts"]
    assert (found["kind"], found["subject"], found["job"]) == ("dead_letter", "doomed", "doomed")
    assert found["key"] == f"dead_letter:doomed:{found['since']}"
    assert parse_iso(found["since"]) <= datetime.now(UTC)
