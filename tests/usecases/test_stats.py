"""`aq.usecases.stats` and `stats_tables`: figures from the event logs, checked against a real run and hand-written logs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aq.core.events import iso
from aq.store.queue import Queue
from aq.usecases.stats import (
    Breakdown,
    Percentiles,
    compute_stats,
    percentiles,
    stats_json,
)
from aq.usecases.stats_tables import stats_text
from tests.helpers.cli import run_aq
from tests.helpers.queue import T0, write_job

HOUR = 3600.0
DAY = 86400.0


def at(seconds: float) -> str:
    return iso(T0 + timedelta(seconds=seconds))


def write_log(root: Path, job_id: str, *events: dict[str, object], junk: str = "") -> None:
    """The job's event log as a worker leaves it: one JSON object per line (plus `junk` lines)."""
    folder = root / "queue" / ".events"
    folder.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(event) for event in events]
    (folder / f"{job_id}.jsonl").write_text("\n".join(lines) + "\n" + junk)


def added(t: float) -> dict[str, object]:
    return {"ts": at(t), "type": "added", "by": "me@host", "to": "inbox"}


def claimed(t: float, token: str, by: str = "w1", **extra: object) -> dict[str, object]:
    return {"ts": at(t), "type": "claimed", "by": by, "from": "inbox", "to": "building",
            "attempt": int(token.split(".")[0]), "token": token, **extra}


def finished(t: float, token: str, to: str, action: str, outcome: str, by: str = "w1",
             verify_exit: int | None = None, duration: float | None = None,
             **extra: object) -> dict[str, object]:
    event = {"ts": at(t), "type": "finished", "by": by, "from": "building", "to": to,
             "action": action, "token": token, "outcome": outcome, "verify_exit": verify_exit,
             **extra}
    if duration is not None:  # a take-back of an expired lease records none
        event["duration"] = duration
    return event


def moved(t: float, source: str, to: str, action: str) -> dict[str, object]:
    return {"ts": at(t), "type": "moved", "by": "me@host", "from": source, "to": to, "action": action}


# --- a real run ------------------------------------------------------------------------------

JOBS = {
    "pass-a": "---\nverify: \"true\"\n---\necho a\n",
    "flaky": "---\nverify: test \"$AQ_ATTEMPT\" -ge 2\nretry: {max: 2, backoff: 0s}\n---\necho flaky\n",
    "doomed": "---\nverify: exit 3\nretry: {max: 1, backoff: 0s}\n---\necho doomed\n",
    "auto": "---\nverify: \"true\"\nreview-policy: auto\nprofile: tester\n---\necho auto\n",
    "review-me": "echo for a person to review\n",
    "broken": "exit 5\n",
}


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A queue made by `aq init`, six jobs of known behaviour run by `aq run --drain`, one shipped
    by hand."""
    base = tmp_path_factory.mktemp("real")
    assert run_aq("init", "q", cwd=base).returncode == 0
    root = base / "q"
    config = root / "aq.yaml"
    config.write_text(config.read_text().replace("default_engine: claude", "default_engine: shell"))
    (root / "profiles" / "tester.md").write_text("---\nname: tester\nengine: shell\n---\nYou test.\n")
    for job_id, text in JOBS.items():
        (base / f"{job_id}.md").write_text(text)
        done = run_aq("add", "--id", job_id, str(base / f"{job_id}.md"), cwd=root)
        assert done.returncode == 0, done.stderr
    ran = run_aq("run", "--drain", "--worker", "tester", cwd=root, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert run_aq("ship", "review-me", cwd=root).returncode == 0
    return root


def test_stats_of_a_real_run_match_its_known_outcomes(real_run: Path) -> None:
    """Counts, rates and per-engine/profile attempts of a real `aq run --drain` are exactly what its jobs did."""
    stats = compute_stats(Queue(real_run), now=datetime.now(UTC), since=None)
    assert stats.jobs_per_stage == {"inbox": 0, "building": 0, "review": 0, "testing": 2,
                                    "shipped": 2, "failed": 1, "dead_letter": 1}
    # attempts: pass-a 1, flaky 2, doomed 2, auto 1, review-me 1, broken 1
    assert stats.attempts == 8
    assert (stats.retries, stats.reclaims, stats.dead_letters) == (2, 0, 1)
    # verify ran for pass-a (0), flaky (1, 0), doomed (3, 3) and auto (0)
    assert (stats.verify_runs, stats.verify_pass_rate) == (6, 0.5)
    # first attempts that passed: pass-a, auto, review-me; not flaky, doomed, broken
    assert (stats.first_attempts, stats.first_pass_rate) == (6, 0.5)
    assert sum(count for _, count in stats.shipped_per_day) == 2  # auto by policy, review-me by hand
    assert stats.queued_to_claimed.count == stats.claimed_to_done.count == 8
    for p in (stats.queued_to_claimed, stats.claimed_to_done):
        assert p.median is not None and p.p90 is not None
        assert 0 <= p.median <= p.p90
    [worker] = stats.workers
    assert (worker.worker, worker.attempts) == ("tester", 8)
    assert worker.busy_seconds > 0 and 0 < worker.busy_share <= 1
    [engine] = stats.per_engine
    assert engine[:4] == ("shell", 8, 4, 4)  # broken, flaky's first and both of doomed's failed
    assert engine.median_duration is not None and engine.median_duration >= 0
    assert {row.name: row[1:4] for row in stats.per_profile} == {"(none)": (7, 3, 4), "tester": (1, 1, 0)}


def test_stats_of_a_real_run_render_as_json_and_as_text(real_run: Path) -> None:
    """The real run's stats survive a JSON round trip and render as text without escape codes."""
    stats = compute_stats(Queue(real_run), now=datetime.now(UTC), since=7 * DAY)
    data = json.loads(json.dumps(stats_json(stats)))
    assert data["attempts"] == 8 and data["per_engine"][0]["name"] == "shell"
    assert len(data["shipped_per_day"]) == 8  # seven days back and today
    text = stats_text(stats, width=80, color=False)
    assert "\x1b" not in text and "tester" in text and "shell" in text


# --- hand-written logs -----------------------------------------------------------------------

def test_percentiles_interpolate_linearly_between_ranks() -> None:
    """Median and p90 interpolate between the two nearest ranks; no samples give None."""
    assert percentiles([]) == Percentiles(None, None, 0)
    assert percentiles([7.0]) == Percentiles(7.0, 7.0, 1)
    assert percentiles([float(n) for n in range(100, 0, -10)]) == Percentiles(55.0, 91.0, 10)


def test_queued_to_claimed_pairs_each_add_with_its_claim(queue_root: Path) -> None:
    """Ten jobs claimed 10, 20, ... 100 s after their add give a median of 55 s and a p90 of 91 s."""
    for n in range(1, 11):
        write_job(queue_root, f"job-{n}", stage="testing")
        write_log(queue_root, f"job-{n}", added(0), claimed(10 * n, f"1.w1.{n}"),
                  finished(10 * n + 5, f"1.w1.{n}", "testing", "pass", "ok", verify_exit=0, duration=5))
    stats = compute_stats(Queue(queue_root), now=T0 + timedelta(hours=1), since=None)
    assert stats.queued_to_claimed == Percentiles(55.0, 91.0, 10)
    assert stats.claimed_to_done == Percentiles(5.0, 5.0, 10)
    assert (stats.verify_pass_rate, stats.first_pass_rate) == (1.0, 1.0)
    assert stats.jobs_per_stage["testing"] == 10


def test_the_window_counts_events_inside_it_and_pairs_them_with_earlier_ones(queue_root: Path) -> None:
    """Events before now - since are not counted, but a claim before the window gives the time to a finish inside it."""
    write_job(queue_root, "old", stage="testing")
    write_log(queue_root, "old", added(-3 * DAY), claimed(-3 * DAY + 60, "1.w1.a"),
              finished(-3 * DAY + 120, "1.w1.a", "testing", "pass", "ok", verify_exit=0))
    write_job(queue_root, "straddle", stage="testing")
    write_log(queue_root, "straddle", added(-2 * HOUR), claimed(-6600, "1.w1.b"),
              finished(-1800, "1.w1.b", "inbox", "retry", "verify_failed", verify_exit=1),
              claimed(-1200, "2.w1.c"),
              finished(-600, "2.w1.c", "testing", "pass", "ok", verify_exit=0))
    stats = compute_stats(Queue(queue_root), now=T0, since=HOUR)
    assert stats.since == at(-HOUR)
    assert stats.events == 3
    assert stats.attempts == 1  # the claim at -6600 s is before the window
    assert (stats.retries, stats.verify_runs, stats.verify_pass_rate) == (1, 2, 0.5)
    assert stats.queued_to_claimed == Percentiles(600.0, 600.0, 1)  # from the retry to the claim
    assert stats.claimed_to_done == Percentiles(2700.0, 4380.0, 2)  # 4800 s and 600 s
    assert (stats.first_attempts, stats.first_pass_rate) == (1, 0.0)
    [worker] = stats.workers  # busy from the window's start to -1800 s, and -1200 s to -600 s
    assert (worker.worker, worker.attempts, worker.busy_seconds) == ("w1", 1, 2400.0)
    assert worker.busy_share == pytest.approx(2400 / 3600)
    everything = compute_stats(Queue(queue_root), now=T0, since=None)
    assert (everything.since, everything.attempts, everything.events) == (None, 3, 8)
    assert everything.window_seconds == 3 * DAY


def test_shipped_per_day_lists_every_day_of_the_window_with_zeros(queue_root: Path) -> None:
    """Ships by hand and by review-policy auto count on their UTC day; days without any are listed as 0."""
    for job_id, day in (("early", -12), ("mon", -3), ("tue", 0)):
        write_job(queue_root, job_id, stage="shipped")
        write_log(queue_root, job_id, added(day * DAY - 600), claimed(day * DAY - 500, "1.w1.x"),
                  finished(day * DAY - 400, "1.w1.x", "testing", "pass", "ok", verify_exit=0),
                  moved(day * DAY - 60, "testing", "shipped", "ship"))
    write_job(queue_root, "auto", stage="shipped")
    write_log(queue_root, "auto", added(-600), claimed(-500, "1.w1.y"),
              finished(-400, "1.w1.y", "shipped", "autoship", "ok", verify_exit=0))
    stats = compute_stats(Queue(queue_root), now=T0, since=4 * DAY)
    assert stats.shipped_per_day == (("2025-12-28", 0), ("2025-12-29", 1), ("2025-12-30", 0),
                                     ("2025-12-31", 0), ("2026-01-01", 2))
    text = stats_text(stats, width=80, color=False)
    assert "▁▅▁▁█" in text  # the sparkline: nothing, one, nothing, nothing, two


def test_reclaims_and_requeues_restart_the_queued_clock(queue_root: Path) -> None:
    """A reclaim and a requeue put the job back in the inbox: the next claim's wait counts from there."""
    write_job(queue_root, "bumpy", stage="testing")
    write_log(queue_root, "bumpy", added(0), claimed(100, "1.w1.a"),
              finished(200, "1.w1.a", "inbox", "reclaim", "interrupted", reclaim=True),
              claimed(230, "2.w2.b", by="w2"),
              finished(400, "2.w2.b", "dead_letter", "dead", "lease_expired", by="w2", reclaim=True),
              moved(1000, "dead_letter", "inbox", "requeue"),
              claimed(1050, "3.w1.c"),
              finished(1100, "3.w1.c", "testing", "pass", "ok", verify_exit=0))
    stats = compute_stats(Queue(queue_root), now=T0 + timedelta(hours=1), since=None)
    assert stats.queued_to_claimed == Percentiles(50.0, 90.0, 3)  # 100 s, 30 s, 50 s
    assert (stats.reclaims, stats.dead_letters, stats.retries) == (2, 1, 0)
    assert stats.first_pass_rate == 0.0  # the first attempt went back to the inbox
    [engine] = stats.per_engine
    assert engine[:4] == ("shell", 3, 1, 0)  # a reclaim is not the job's failure


def test_a_graceful_stop_is_not_counted_as_a_reclaim_as_the_fold_does_not(queue_root: Path) -> None:
    """`aq stats` counts reclaims as the fold does: a take-back of an expired lease counts, an
    attempt a person stopped (TERM, Ctrl-C: `graceful`) does not."""
    write_job(queue_root, "stopped", stage="inbox")
    write_log(queue_root, "stopped", added(0), claimed(100, "1.w1.a"),
              finished(200, "1.w1.a", "inbox", "reclaim", "interrupted", reclaim=True, graceful=True),
              claimed(300, "2.w2.b", by="w2"),
              finished(400, "2.w2.b", "inbox", "reclaim", "lease_expired", by="w2", reclaim=True))
    stats = compute_stats(Queue(queue_root), now=T0 + timedelta(hours=1), since=None)
    assert stats.reclaims == 1
    assert stats.reclaims == Queue(queue_root).snapshot().by_id()["stopped"].state.reclaims


def test_engine_and_profile_come_from_the_claim_else_the_job_else_the_queue(queue_root: Path) -> None:
    """The claim's pinned engine wins, then the job's engine, its profile's, then aq.yaml's default_engine."""
    (queue_root / "profiles" / "codexer.md").write_text("---\nname: codexer\nengine: codex\n---\nHi.\n")
    pinned = {"name": "developer", "version": "1", "hash": "abc"}
    cases: dict[str, tuple[dict[str, str], dict[str, object]]] = {
        "pinned": ({}, {"engine": "aider", "profile": pinned}),
        "own": ({"engine": "claude"}, {}),
        "by-profile": ({"profile": "codexer"}, {"profile": {"name": "codexer", "version": "1"}}),
        "plain": ({}, {}),
    }
    for job_id, (keys, claim_extra) in cases.items():
        write_job(queue_root, job_id, stage="review", **keys)
        write_log(queue_root, job_id, added(0), {**claimed(10, "1.w1.z"), **claim_extra},
                  finished(20, "1.w1.z", "review", "submit", "ok", duration=10))
    stats = compute_stats(Queue(queue_root), now=T0 + timedelta(hours=1), since=None)
    assert set(stats.per_engine) == {Breakdown(name, 1, 1, 0, 10.0, None, None, 1, 1)
                                     for name in ("aider", "claude", "codex", "shell")}
    assert {row.name: row.attempts for row in stats.per_profile} == {
        "developer": 1, "codexer": 1, "(none)": 2}


def test_a_worker_is_busy_once_while_running_two_jobs_and_a_running_attempt_counts_until_now(
        queue_root: Path) -> None:
    """Busy time is the union of a worker's attempts; an attempt still running counts until now."""
    write_job(queue_root, "one", stage="testing")
    write_log(queue_root, "one", added(0), claimed(100, "1.w1.a"),
              finished(400, "1.w1.a", "testing", "pass", "ok", verify_exit=0))
    write_job(queue_root, "two", stage="testing")
    write_log(queue_root, "two", added(0), claimed(200, "1.w1.b"),
              finished(600, "1.w1.b", "testing", "pass", "ok", verify_exit=0))
    write_job(queue_root, "running", stage="building")
    write_log(queue_root, "running", added(0), claimed(3000, "1.w2.c", by="w2"))
    stats = compute_stats(Queue(queue_root), now=T0 + timedelta(seconds=3600), since=None)
    assert [tuple(row) for row in stats.workers] == [("w2", 1, 600.0, 600 / 3600),
                                                     ("w1", 2, 500.0, 500 / 3600)]
    assert stats.claimed_to_done.count == 2  # the running attempt has no end yet
    assert stats.jobs_per_stage["building"] == 1


def test_torn_and_foreign_lines_are_skipped(queue_root: Path) -> None:
    """A torn last line, a non-object line and an event without a time are skipped; the rest counts."""
    write_job(queue_root, "torn", stage="review")
    write_log(queue_root, "torn", added(0), claimed(10, "1.w1.a"),
              {"type": "note", "why": "no ts"}, finished(20, "1.w1.a", "review", "submit", "ok"),
              junk='[1, 2]\n{"ts": "2026-01-01T12:00:30.000000Z", "type": "fini')
    stats = compute_stats(Queue(queue_root), now=T0 + timedelta(hours=1), since=None)
    assert (stats.events, stats.attempts, stats.claimed_to_done.count) == (3, 1, 1)


def test_an_empty_queue_has_no_rates_and_one_day(queue_root: Path) -> None:
    """With no events every rate and time is None, counts are 0 and the window is just today."""
    stats = compute_stats(Queue(queue_root), now=T0, since=None)
    assert (stats.verify_pass_rate, stats.first_pass_rate) == (None, None)
    assert stats.queued_to_claimed == Percentiles(None, None, 0)
    assert stats.shipped_per_day == (("2026-01-01", 0),)
    assert (stats.attempts, stats.workers, stats.per_engine) == (0, (), ())
    text = stats_text(stats, width=80, color=False)
    assert "\x1b" not in text and "all history" in text


def test_text_fits_the_width_and_has_escape_codes_only_with_color(queue_root: Path) -> None:
    """At 80 columns no line is wider than 80; color adds escape codes, no color has none; 90 days fit too."""
    for n in range(40):
        job_id = f"a-rather-long-job-name-{n}"
        write_job(queue_root, job_id, stage="shipped")
        write_log(queue_root, job_id, added(-n * DAY - 900),
                  claimed(-n * DAY - 800, "1.a-worker-with-a-very-long-name-on-some-host.x",
                          by=f"a-worker-with-a-very-long-name-on-some-host-{n % 3}"),
                  finished(-n * DAY - 700, "1.a-worker-with-a-very-long-name-on-some-host.x",
                           "shipped", "autoship", "ok",
                           by=f"a-worker-with-a-very-long-name-on-some-host-{n % 3}", verify_exit=0))
    stats = compute_stats(Queue(queue_root), now=T0, since=90 * DAY)
    plain = stats_text(stats, width=80, color=False)
    assert "\x1b" not in plain
    assert max(len(line) for line in plain.splitlines()) <= 80
    assert "per 2 days" in plain  # 91 days drawn as 46 bars
    assert "\x1b[" in stats_text(stats, width=80, color=True)
    narrow = stats_text(stats, width=60, color=False)
    assert max(len(line) for line in narrow.splitlines()) <= 60


def test_stats_json_is_plain_json_with_every_figure(queue_root: Path) -> None:
    """stats_json holds only JSON types, with the stages, days, times, rates and breakdowns."""
    write_job(queue_root, "one", stage="testing")
    write_log(queue_root, "one", added(0), claimed(10, "1.w1.a"),
              finished(30, "1.w1.a", "testing", "pass", "ok", verify_exit=0, duration=20))
    data = stats_json(compute_stats(Queue(queue_root), now=T0 + timedelta(hours=1), since=DAY))
    assert json.loads(json.dumps(data)) == data
    assert data["queued_to_claimed"] == {"median": 10.0, "p90": 10.0, "count": 1}
    assert data["workers"] == [{"worker": "w1", "attempts": 1, "busy_seconds": 20.0,
                                "busy_share": 20 / DAY}]
    assert data["per_engine"] == [{"name": "shell", "attempts": 1, "ok": 1, "failed": 0,
                                   "median_duration": 20.0, "cost_usd": None, "tokens": None,
                                   "first_attempts": 1, "first_passed": 1}]
    assert (data["cost_usd"], data["tokens"], data["shipped_cost"]) == (None, None, [])
    assert data["shipped_per_day"] == [{"day": "2025-12-31", "shipped": 0},
                                       {"day": "2026-01-01", "shipped": 0}]


def test_cost_per_day_sums_what_attempts_that_ended_that_day_reported(queue_root: Path) -> None:
    """Each UTC day of the window with what the attempts that ended on it cost (zeros too, and
    an attempt that reported no cost adds nothing); in JSON as {day, usd}."""
    def paid(usd: float | None) -> dict[str, object]:
        return {"usage": {"cost_usd": usd, "input_tokens": 10}} if usd is not None else {}

    for job_id, day, usd in (("a", -2, 0.25), ("b", -2, 0.5), ("c", 0, 1.0), ("d", 0, None)):
        write_job(queue_root, job_id, stage="review")
        token = f"1.w1.{job_id}"
        write_log(queue_root, job_id, added(day * DAY - 600), claimed(day * DAY - 500, token),
                  finished(day * DAY - 400, token, "review", "submit", "ok", **paid(usd)))
    stats = compute_stats(Queue(queue_root), now=T0, since=3 * DAY)
    assert stats.cost_per_day == (("2025-12-29", 0.0), ("2025-12-30", 0.75),
                                  ("2025-12-31", 0.0), ("2026-01-01", 1.0))
    assert stats_json(stats)["cost_per_day"][1] == {"day": "2025-12-30", "usd": 0.75}
