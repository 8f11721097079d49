"""How long a person waits for the views of a busy queue: `aq stats`, `aq board`, `aq events`.

Builds a queue of 10,000 jobs spread over every stage with 50,000 events in their logs (the
added / claimed / finished / moved sequences a month of a fleet leaves: retries, reclaims,
dead letters, ships by hand and by review-policy auto, a few profiles and engines), written
straight to disk and committed once. Then times each view as a whole process, start to exit,
beside `python -c pass` measured in the same rounds, and `compute_stats` in this process.
A command the CLI does not have yet is skipped with a note. It prints figures and asserts
nothing: see benchmarks/README.md.

    python benchmarks/bench_views.py            # 10,000 jobs, 50,000 events, 7 runs
    python benchmarks/bench_views.py --quick    # 1,000 jobs, 5,000 events, 3 runs: a smoke run
    python benchmarks/bench_views.py --json     # the same figures as JSON on stdout
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench_queue import child_env, commit_all  # benchmarks/ is on sys.path when run as a script
from bench_queue import drop_manifest_cache as drop_caches

from aq.usecases.setup import init_queue

STAGES = ("inbox", "building", "review", "testing", "shipped", "failed", "dead_letter")
STAGE_WEIGHTS = (20, 3, 8, 12, 45, 7, 5)
WORKERS = tuple(f"factory-{n}" for n in range(1, 9))
PROFILES = ("developer", "backend-engineer", "qa", "docs-writer")
ENGINES = ("claude", "codex", "shell")
AREAS = ("parser", "login page", "billing", "search index", "cli", "docs", "api client", "cache")
HISTORY = timedelta(days=30)
TARGET_S = 1.0  # issue 7 ("Speed"): `aq stats` on 10,000 jobs and 50,000 events


# --- building a queue -------------------------------------------------------------------------

def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def line(event: dict[str, object]) -> str:
    return json.dumps(event, separators=(",", ":")) + "\n"


@dataclass(slots=True)
class JobPlan:
    id: str
    stage: str
    failures: int  # failed attempts before the last one (each a claimed + finished pair)
    profile: str | None
    engine: str | None
    autoship: bool  # shipped by review-policy auto, not by hand

    def events(self) -> int:
        last = {"inbox": 0, "building": 1, "shipped": 2 if self.autoship else 3}.get(self.stage, 2)
        return 1 + 2 * self.failures + last


def plan_jobs(jobs: int, events: int, rng: random.Random) -> list[JobPlan]:
    """Stages by weight, then failed attempts added at random until the logs hold `events`."""
    plans = []
    for index in range(jobs):
        stage = rng.choices(STAGES, STAGE_WEIGHTS)[0]
        failures = 1 if stage == "dead_letter" else 0  # a dead letter used its retry
        plans.append(JobPlan(f"job-{index:05d}", stage, failures,
                             rng.choice(PROFILES) if rng.random() < 0.3 else None,
                             rng.choice(ENGINES) if rng.random() < 0.5 else None,
                             stage == "shipped" and rng.random() < 0.3))
    total = sum(plan.events() for plan in plans)
    while total + 2 <= events:
        plan = rng.choice(plans)
        if plan.stage != "inbox" or rng.random() < 0.2:  # most of the inbox was never claimed
            plan.failures += 1
            total += 2
    return plans


def job_events(plan: JobPlan, added: datetime, rng: random.Random) -> list[dict[str, object]]:
    """One job's log: added; each failed attempt a claim and a retry or reclaim back to the
    inbox; then the last attempt as the job's stage says, and a ship by hand."""
    at = added
    out: list[dict[str, object]] = [{"ts": iso(at), "type": "added", "by": "dev@laptop", "to": "inbox"}]

    def claim(attempt: int) -> str:
        nonlocal at
        at += timedelta(seconds=rng.uniform(5, 1800))
        worker = rng.choice(WORKERS)
        token = f"{attempt}.{worker}.{rng.getrandbits(24):06x}"
        event: dict[str, object] = {
            "ts": iso(at), "type": "claimed", "by": worker, "from": "inbox", "to": "building",
            "attempt": attempt, "token": token, "host": worker, "pid": rng.randint(1000, 60000)}
        if plan.profile:
            event["profile"] = {"name": plan.profile, "version": "1", "hash": "0123456789abcdef"}
            event["engine"] = plan.engine or "claude"
        out.append(event)
        return token

    def finish(attempt: int, token: str, to: str, action: str, outcome: str,
               verify_exit: int | None) -> None:
        nonlocal at
        took = rng.uniform(30, 2400)
        at += timedelta(seconds=took)
        out.append({
            "ts": iso(at), "type": "finished", "by": str(out[-1]["by"]), "from": "building",
            "to": to, "action": action, "attempt": attempt, "token": token, "outcome": outcome,
            "exit_code": 0 if outcome != "engine_failed" else 1, "verify_exit": verify_exit,
            "detail": f"{outcome}", "why": f"{outcome} after attempt {attempt}",
            "not_before": None, "backoff": None, "fingerprint": None, "tail": None,
            "log": f"queue/.logs/{plan.id}/{attempt}.log", "artifacts": [],
            "duration": round(took, 3), "reclaim": outcome == "interrupted"})

    attempts = plan.failures + (0 if plan.stage == "inbox" else 1)
    for attempt in range(1, plan.failures + 1):
        token = claim(attempt)
        if rng.random() < 0.15:
            finish(attempt, token, "inbox", "reclaim", "interrupted", None)
        else:
            finish(attempt, token, "inbox", "retry", "verify_failed", 1)
    if plan.stage == "inbox":
        return out
    token = claim(attempts)
    last = {"building": None, "review": ("review", "submit", "ok", None),
            "testing": ("testing", "pass", "ok", 0), "shipped": ("testing", "pass", "ok", 0),
            "failed": ("failed", "fail", "engine_failed", None),
            "dead_letter": ("dead_letter", "dead", "verify_failed", 1)}[plan.stage]
    if last is None:
        return out
    if plan.autoship:
        last = ("shipped", "autoship", "ok", 0)
    finish(attempts, token, *last)
    if plan.stage == "shipped" and last[0] != "shipped":
        at += timedelta(seconds=rng.uniform(60, 86400))
        out.append({"ts": iso(at), "type": "moved", "by": "dev@laptop", "from": "testing",
                    "to": "shipped", "action": "ship", "why": "ship by dev@laptop"})
    return out


def job_text(plan: JobPlan, rng: random.Random) -> str:
    area = rng.choice(AREAS)
    lines = ["---", f"title: Fix the {area} (item {plan.id})",
             f"priority: {rng.choice(('critical', 'high', 'medium', 'medium', 'low'))}"]
    if plan.engine:
        lines.append(f"engine: {plan.engine}")
    if plan.profile:
        lines.append(f"profile: {plan.profile}")
    if rng.random() < 0.4:
        lines.append('verify: "pytest -q"')
    lines += ["---", "", f"The {area} misbehaves on large input. Fix it and add a test.", ""]
    return "\n".join(lines)


def build_queue(root: Path, jobs: int, events: int, seed: int, now: datetime) -> int:
    """The queue, committed once; returns the number of events written."""
    init_queue(root)
    rng = random.Random(seed)
    plans = plan_jobs(jobs, events, rng)
    logs = root / "queue" / ".events"
    logs.mkdir(parents=True, exist_ok=True)
    written = 0
    start = now - HISTORY
    for plan in plans:
        added = start + timedelta(seconds=rng.uniform(0, HISTORY.total_seconds() * 0.9))
        log = job_events(plan, added, rng)
        written += len(log)
        (root / "queue" / plan.stage / f"{plan.id}.md").write_text(job_text(plan, rng), encoding="utf-8")
        (logs / f"{plan.id}.jsonl").write_text("".join(line(e) for e in log), encoding="utf-8")
    commit_all(root, f"bench: {jobs} jobs, {written} events")
    return written


# --- timing ------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Command:
    label: str
    argv: tuple[str, ...]
    target_s: float | None


@dataclass(slots=True)
class Figures:
    command: str
    cold_s: float
    median_s: float = 0.0
    min_s: float = 0.0
    runs_s: list[float] = field(default_factory=list)
    ratio: float | None = None
    target_s: float | None = None
    verdict: str = "-"
    exit_codes: list[int] = field(default_factory=list)
    first_error: str | None = None


STATS_SCRIPT = ("import json, sys; from datetime import UTC, datetime; from aq.store.queue import Queue; "
                "from aq.usecases.stats import compute_stats, stats_json; "
                "s = compute_stats(Queue.locate(), now=datetime.now(UTC), since=None); "
                "sys.stdout.write(json.dumps(stats_json(s)))")


def available(python: str) -> set[str]:
    """The subcommands `python -m aq --help` lists."""
    done = subprocess.run([python, "-m", "aq", "--help"], env=child_env(), capture_output=True,
                          text=True, check=False)
    names = set()
    listing = False
    for text in done.stdout.splitlines():
        if text.strip() == "Commands:":
            listing = True
        elif listing and text.startswith("  ") and text.strip():
            names.add(text.split()[0])
    return names


def commands(notes: list[str]) -> list[Command]:
    python = sys.executable
    found = [Command("python -c pass", (python, "-c", "pass"), None)]
    have = available(python)
    wanted = [("stats", ("stats", "--json"), TARGET_S), ("board", ("board", "--once"), TARGET_S),
              ("events", ("events", "--json"), None)]
    for name, args, target in wanted:
        if name in have:
            found.append(Command(f"aq {' '.join(args)}", (python, "-m", "aq", *args), target))
        else:
            notes.append(f"`aq {name}` is not a command of this aq yet: skipped")
    found.append(Command("compute_stats via python -c", (python, "-c", STATS_SCRIPT), TARGET_S))
    return found


def timed(argv: Sequence[str], cwd: Path) -> tuple[float, int, str]:
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=child_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, check=False)
    return time.perf_counter() - start, done.returncode, done.stderr.decode("utf-8", "replace")


def keep(fig: Figures, code: int, stderr: str) -> None:
    fig.exit_codes.append(code)
    if code != 0 and fig.first_error is None:
        lines = stderr.strip().splitlines()
        fig.first_error = lines[-1] if lines else f"exit code {code}, no output"


def measure(root: Path, runs: int, cmds: list[Command]) -> list[Figures]:
    """Cold run each (no cache), one warm-up round, then `runs` interleaved rounds."""
    figures: dict[Command, Figures] = {}
    for cmd in cmds:
        drop_caches(root)
        seconds, code, err = timed(cmd.argv, root)
        figures[cmd] = Figures(cmd.label, cold_s=seconds, target_s=cmd.target_s)
        keep(figures[cmd], code, err)
    for cmd in cmds:
        timed(cmd.argv, root)
    for _ in range(runs):
        for cmd in cmds:
            seconds, code, err = timed(cmd.argv, root)
            figures[cmd].runs_s.append(seconds)
            keep(figures[cmd], code, err)
    baseline = statistics.median(figures[cmds[0]].runs_s)
    for fig in figures.values():
        fig.median_s = statistics.median(fig.runs_s)
        fig.min_s = min(fig.runs_s)
        fig.ratio = fig.median_s / baseline if baseline else None
        if fig.target_s is not None:
            failed = any(code != 0 for code in fig.exit_codes)
            fig.verdict = "ERR" if failed else ("PASS" if fig.median_s < fig.target_s else "MISS")
    return list(figures.values())


def in_process(root: Path, runs: int) -> dict[str, float]:
    """compute_stats and all_events in this process: cold (no cache) once, then the median warm."""
    from aq.store.queue import Queue
    from aq.usecases.events import all_events
    from aq.usecases.stats import compute_stats

    now = datetime.now(UTC)
    drop_caches(root)
    start = time.perf_counter()
    compute_stats(Queue(root), now=now, since=None)
    cold = time.perf_counter() - start
    stats_runs, week_runs, event_runs = [], [], []
    for _ in range(runs):
        start = time.perf_counter()
        compute_stats(Queue(root), now=now, since=None)
        stats_runs.append(time.perf_counter() - start)
        start = time.perf_counter()
        compute_stats(Queue(root), now=now, since=7 * 86400.0)
        week_runs.append(time.perf_counter() - start)
        start = time.perf_counter()
        all_events(Queue(root))
        event_runs.append(time.perf_counter() - start)
    return {"compute_stats cold": cold, "compute_stats": statistics.median(stats_runs),
            "compute_stats --since 7d": statistics.median(week_runs),
            "all_events": statistics.median(event_runs)}


# --- reporting ---------------------------------------------------------------------------------

def load_average() -> float | None:
    """The 1-minute load average: other work on the machine inflates every figure."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def render(rows: list[Figures], inside: dict[str, float], runs: int) -> str:
    head = ("command", "cold s", "median s", "min s", "x python", "target s", "")
    body = [head]
    for f in rows:
        failed = sum(1 for code in f.exit_codes if code != 0)
        note = f" ({failed}/{len(f.exit_codes)} runs failed)" if failed else ""
        body.append((f.command + note, f"{f.cold_s:.3f}", f"{f.median_s:.3f}", f"{f.min_s:.3f}",
                     f"{f.ratio:.1f}" if f.ratio is not None else "-",
                     f"< {f.target_s:g}" if f.target_s is not None else "-", f.verdict))
    widths = [max(len(row[i]) for row in body) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) if i in (0, 6) else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
             for row in body]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for f in rows:
        if f.first_error:
            lines.append(f"{f.command} failed: {f.first_error}")
    lines.append(f"\nmedian and min of {runs} runs after one warm-up; cold = first run with no "
                 "manifest/state cache; x python = median / median of `python -c pass`.")
    lines.append("\nin this process (no interpreter start, no imports):")
    lines += [f"  {name:<26} {seconds:.3f} s" for name, seconds in inside.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=None, help="timed runs (default 7; 3 with --quick)")
    parser.add_argument("--quick", action="store_true", help="1,000 jobs, 5,000 events, 3 runs")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    parser.add_argument("--seed", type=int, default=2026, help="seed of the generated queue")
    args = parser.parse_args(argv)
    runs = max(1, args.runs or (3 if args.quick else 7))
    jobs, events = (1000, 5000) if args.quick else (10000, 50000)
    notes: list[str] = []
    cmds = commands(notes)
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="aq-bench-views-") as tmp:
        root = Path(tmp) / "repo"
        print(f"building a queue of {jobs:,} jobs and {events:,} events in {root} ...", file=sys.stderr)
        start = time.perf_counter()
        written = build_queue(root, jobs, events, args.seed, datetime.now(UTC))
        build_s = time.perf_counter() - start
        print(f"  {written:,} events; built and committed in {build_s:.1f}s; timing {len(cmds)} "
              f"commands x {runs} runs ...", file=sys.stderr)
        rows = measure(root, runs, cmds)
        inside = in_process(root, runs)
    load = {"before": load_before, "after": load_average()}
    if args.json:
        print(json.dumps({"python": platform.python_version(), "platform": platform.platform(),
                          "cpus": os.cpu_count(), "load_average_1m": load,
                          "jobs": jobs, "events": written, "runs": runs,
                          "build_s": build_s, "notes": notes, "results": [asdict(f) for f in rows],
                          "in_process_s": inside}, indent=2))
        return 0
    print(f"python {platform.python_version()} on {platform.platform()}, {os.cpu_count()} CPUs; "
          f"{jobs:,} jobs, {written:,} events; 1-min load average {load['before']} before, "
          f"{load['after']} after\n")
    for note in notes:
        print(f"note: {note}")
    if notes:
        print()
    print(render(rows, inside, runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
