"""`aq metrics`: the queue's figures in Prometheus's text format, read back with prometheus-client's
own parsers and checked against `aq stats --json` on a queue a real worker ran (jobs in several
stages, attempts that reported a cost)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.cli import aq_env, run_aq
from tests.helpers.fleet import fleet_in
from tests.helpers.queue import PAID_ENGINE, make_queue, paid_body, stage_of, write_job
from tests.helpers.waiting import wait_until
from tests.helpers.web import stop

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples_of(text: str, parse: object = text_string_to_metric_families) -> Samples:
    """(sample name, labels) -> value of every sample, as prometheus-client parses the text."""
    assert callable(parse)
    return {(s.name, frozenset(s.labels.items())): s.value for family in parse(text)
            for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    return sum(v for (n, found), v in samples.items()
               if n == name and set(labels.items()) <= set(found))


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A queue a worker drained: paid jobs (one passed verify, one failed it), a failed shell
    job, one left for review and one shipped; then one job ready in the inbox, one blocked."""
    base = tmp_path_factory.mktemp("metrics")
    with pytest.MonkeyPatch.context() as patch:
        root = make_queue(base / "q", patch)
    (root / "aq.yaml").write_text((root / "aq.yaml").read_text() + PAID_ENGINE)
    for job_id, args in {
        "paid-pass": ("--body", paid_body(0.25), "--engine", "paid", "--verify", "true"),
        "paid-fail": ("--body", paid_body(0.5), "--engine", "paid", "--verify", "false"),
        "broken": ("--body", "exit 3"),
        "review-me": ("--body", "echo look"),
        "ship-me": ("--body", "echo ship"),
    }.items():
        done = run_aq("add", "--id", job_id, *args, cwd=root)
        assert done.returncode == 0, done.stderr
    drained = run_aq("run", "--drain", "--worker", "w1", "--poll", "0.1", cwd=root, timeout=120)
    assert drained.returncode == 0, drained.stderr
    assert run_aq("ship", "ship-me", cwd=root).returncode == 0
    write_job(root, "ready", "echo later")
    write_job(root, "blocked", "echo later", deps=["never-there"])
    assert [stage_of(root, j) for j in ("paid-pass", "paid-fail", "broken", "review-me",
                                        "ship-me", "ready")] == [
        "testing", "failed", "failed", "review", "shipped", "inbox"]
    return root


def test_aq_metrics_parses_and_its_numbers_are_aq_stats_numbers(ran: Path) -> None:
    """Every figure `aq metrics` prints that `aq stats --json` has too is the same number."""
    printed = run_aq("metrics", cwd=ran)
    assert printed.returncode == 0, printed.stderr
    samples = samples_of(printed.stdout)
    stats = json.loads(run_aq("stats", "--json", cwd=ran).stdout)
    for stage, count in stats["jobs_per_stage"].items():
        assert value(samples, "aq_jobs", stage=stage) == count, stage
    [engines] = [{row["name"]: row for row in stats["per_engine"]}]
    assert set(engines) == {"paid", "shell"}
    for name, row in engines.items():
        assert total(samples, "aq_attempts_total", engine=name) == row["attempts"]
        assert value(samples, "aq_attempts_total", engine=name, result="ok") == row["ok"]
        assert value(samples, "aq_attempts_total", engine=name, result="failed") == row["failed"]
    assert value(samples, "aq_cost_usd_total", engine="paid") == pytest.approx(0.75)
    assert total(samples, "aq_cost_usd_total") == pytest.approx(stats["cost_usd"])
    assert total(samples, "aq_tokens_total") == stats["tokens"] == 2020
    runs = total(samples, "aq_verify_runs_total")
    assert runs == stats["verify_runs"] == 2
    assert value(samples, "aq_verify_runs_total", result="pass") / runs == stats["verify_pass_rate"]
    assert total(samples, "aq_first_attempts_total") == stats["first_attempts"]
    assert value(samples, "aq_first_attempts_total", result="pass") == \
        round(stats["first_pass_rate"] * stats["first_attempts"])
    for name in ("retries", "reclaims", "dead_letters"):
        assert value(samples, f"aq_{name}_total") == stats[name], name
    assert value(samples, "aq_shipped_total") == 1
    for metric, figure in (("aq_assign_latency_seconds", "queued_to_claimed"),
                           ("aq_run_duration_seconds", "claimed_to_done")):
        assert value(samples, f"{metric}_count") == stats[figure]["count"] == 5
        assert value(samples, f"{metric}_bucket", le="+Inf") == 5
        buckets = sorted((float(dict(labels)["le"]), v) for (n, labels), v in samples.items()
                         if n == f"{metric}_bucket")
        assert [v for _, v in buckets] == sorted(v for _, v in buckets)  # cumulative
        assert value(samples, f"{metric}_sum") >= 0


def test_aq_metrics_tells_the_queue_as_it_is_now(ran: Path) -> None:
    """Gauges: the one ready job and its wait, no halt, the alerts open by kind, and no worker
    figures for a queue without a remote."""
    samples = samples_of(run_aq("metrics", cwd=ran).stdout)
    assert value(samples, "aq_ready_jobs") == 1  # 'blocked' waits for a dep that is not there
    assert value(samples, "aq_oldest_ready_job_age_seconds") > 0
    assert value(samples, "aq_halted") == 0
    assert {dict(labels)["kind"]: v for (name, labels), v in samples.items()
            if name == "aq_alerts"} == {"stalled": 0, "failure_spike": 0, "budget": 0,
                                        "machine_offline": 0, "dead_letter": 0}
    assert not any(name == "aq_workers" for name, _ in samples)
    assert run_aq("halt", cwd=ran).returncode == 0
    try:
        assert value(samples_of(run_aq("metrics", cwd=ran).stdout), "aq_halted") == 1
    finally:
        assert run_aq("resume", cwd=ran).returncode == 0


def test_aq_metrics_openmetrics_parses_with_the_openmetrics_parser(ran: Path) -> None:
    """--openmetrics prints OpenMetrics text (ending in # EOF) with the same figures."""
    printed = run_aq("metrics", "--openmetrics", cwd=ran).stdout
    assert printed.endswith("# EOF\n")
    om, plain = samples_of(printed, parse_om), samples_of(run_aq("metrics", cwd=ran).stdout)
    assert value(om, "aq_jobs", stage="failed") == value(plain, "aq_jobs", stage="failed") == 2
    assert value(om, "aq_run_duration_seconds_count") == 5


def test_aq_metrics_serve_answers_scrapes_until_stopped(ran: Path) -> None:
    """`aq metrics --serve 0` prints its address and answers each scrape with the queue read then."""
    proc = subprocess.Popen([sys.executable, "-m", "aq", "metrics", "--serve", "0"], cwd=ran,
                            env=aq_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.match(r"aq metrics: serving (http://127\.0\.0\.1:\d+/metrics)$", line.strip())
        assert found, line + (proc.stderr.read() if proc.poll() is not None and proc.stderr else "")

        def scrape() -> Samples:
            with urllib.request.urlopen(found.group(1), timeout=60) as answer:
                return samples_of(answer.read().decode())

        assert value(scrape(), "aq_jobs", stage="inbox") == 2
        write_job(ran, "more", "echo more")
        try:
            assert value(scrape(), "aq_jobs", stage="inbox") == 3
        finally:
            (ran / "queue" / "inbox" / "more.md").unlink()
    finally:
        stop(proc)  # type: ignore[arg-type]


def test_a_port_in_use_is_one_line(ran: Path) -> None:
    """--serve on a port another process holds is a usage error in one line."""
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        done = run_aq("metrics", "--serve", str(held.getsockname()[1]), cwd=ran)
    assert done.returncode == 2
    assert done.stderr.startswith("aq: cannot serve at 127.0.0.1:") and done.stderr.count("\n") == 1


@pytest.mark.slow
def test_workers_and_pushes_come_from_the_heartbeats_on_the_remote(tmp_path: Path) -> None:
    """In a fleet, a worker waiting on one clone is an idle worker in the metrics of another,
    and the pushes counted by the fleet (this clone's halt among them) are there."""
    with fleet_in(tmp_path, clones=2) as fleet:
        here, there = fleet.clones
        worker = fleet.worker(here, "w1", lease="20s")
        assert wait_until(lambda: "w1" in fleet.aq(there, "workers").stdout, 60), fleet.out(worker)
        assert fleet.aq(there, "halt").returncode == 0  # a push; w1 stays idle
        printed = fleet.aq(there, "metrics")
        assert printed.returncode == 0, printed.stderr
        samples = samples_of(printed.stdout)
        assert {dict(labels)["state"]: v for (name, labels), v in samples.items()
                if name == "aq_workers"} == {"busy": 0, "idle": 1, "offline": 0}
        assert value(samples, "aq_pushes_total", kind="pushes") >= 1
        assert value(samples, "aq_halted") == 1
