"""How much time aq adds to each attempt around a real agent CLI (claude, codex, gemini).

For each CLI it makes a queue with `aq init` in a temp dir, drops N jobs into queue/inbox, and
runs them all with one `python -m aq run --drain`, the CLI pointed at the fake model API of
tests/agents (it answers "done" at once, so nearly all of a run is the CLI's own start-up and
aq's work around it). In the same run it times the same CLI run directly, N times, with the
same command line, environment, prompt and folder. It prints figures and asserts nothing:
see benchmarks/README.md.

    python benchmarks/bench_agents.py                # claude, 10 jobs
    python benchmarks/bench_agents.py --quick        # 3 jobs: a smoke run
    python benchmarks/bench_agents.py --cli all      # claude, codex and gemini
    python benchmarks/bench_agents.py --json         # the same figures as JSON on stdout
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # tests/agents is not installed with aq: it lives in the checkout
    sys.path.insert(0, str(REPO))

from bench_queue import compile_aq, load_average  # noqa: E402 - benchmarks/ is on sys.path as a script

from tests.agents.clis import ARGV, NAMES, TOOLS_BIN, cli_path, prepare  # noqa: E402
from tests.agents.fake_model_api import FakeModelAPI, Reply, Usage  # noqa: E402

TARGET_MS = 150.0  # issue: aq's own overhead per attempt, median of 10
IDENTITY = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.invalid",
            "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.invalid"}
BODY = ("Reply with the single word done.\n\n"
        "This job times aq's own work around an agent: change nothing.\n")
REPLY = Reply("done", Usage(input=1200, output=5, cache_read=300))
DRAIN_TIMEOUT_S = {"claude": 300.0, "codex": 300.0, "gemini": 600.0}

SITECUSTOMIZE = '''\
"""Written by benchmarks/bench_agents.py: time aq's git calls and the parts of an attempt."""
import os

if os.environ.get("AQ_BENCH_LOG"):
    import json
    import threading
    import time

    import aq.infra.engines
    import aq.infra.gitops
    import aq.infra.proc
    import aq.infra.proctree

    _fd = os.open(os.environ["AQ_BENCH_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _timed(real, what):
        def timed(*args, **kwargs):
            start, t0 = time.time(), time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                call = {"what": what, "start": start, "seconds": time.perf_counter() - t0,
                        "thread": threading.current_thread().name,
                        "args": [str(a) for a in args[1:]] if what == "git" else []}
                os.write(_fd, (json.dumps(call) + "\\n").encode())
        return timed

    aq.infra.gitops.git = _timed(aq.infra.gitops.git, "git")
    aq.infra.proc.run_streaming = _timed(aq.infra.proc.run_streaming, "run_streaming")
    # before aq.worker.attempt imports it by name
    aq.infra.engines.engine_version = _timed(aq.infra.engines.engine_version, "engine_version")
    aq.infra.proctree.ProcessTree.refresh = _timed(aq.infra.proctree.ProcessTree.refresh, "proctree")
    aq.infra.proctree.ProcessTree.sweep = _timed(aq.infra.proctree.ProcessTree.sweep, "proctree")
'''


@dataclass(slots=True)
class Spread:
    """Median and 90th percentile of some milliseconds (None: nothing to measure)."""

    median_ms: float | None
    p90_ms: float | None
    n: int

    @classmethod
    def of(cls, ms: Sequence[float]) -> Spread:
        if not ms:
            return cls(None, None, 0)
        p90 = statistics.quantiles(ms, n=10, method="inclusive")[-1] if len(ms) > 1 else ms[0]
        return cls(round(statistics.median(ms), 1), round(p90, 1), len(ms))


@dataclass(slots=True)
class Figures:
    cli: str
    jobs: int
    version: str | None = None  # the finished events' engine_version
    error: str | None = None  # why the figures are missing or partial
    # raw figures, one per job in the order aq claimed them (the first paid for `--version`)
    attempt_ms: list[float] = field(default_factory=list)  # the finished event's `duration`
    cli_ms: list[float | None] = field(default_factory=list)  # the CLI's duration_ms, in its log
    direct_ms: list[float] = field(default_factory=list)  # wall time of the CLI run directly
    direct_cli_ms: list[float | None] = field(default_factory=list)  # its duration_ms, direct
    direct_failed: int = 0
    outcomes: list[str] = field(default_factory=list)
    drain_ms: float | None = None  # the whole `aq run --drain`, start to exit
    drain_exit: int | None = None
    startup_ms: float | None = None  # process start to the first claimed event
    first_git_ms: float | None = None  # process start to aq's first git call: Python and imports
    between_ms: list[float] = field(default_factory=list)  # claimed-to-next-claimed minus duration
    tail_ms: float | None = None  # the last finished event to exit
    # from the timing hook, per job in claim order: the parts of each attempt
    engine_ms: list[float] = field(default_factory=list)  # aq.infra.proc.run_streaming: the CLI as aq runs it
    probe_ms: list[float] = field(default_factory=list)  # aq.infra.engines.engine_version (`CLI --version`)
    proctree_ms: list[float] = field(default_factory=list)  # looks at the run's process tree in /proc
    git_calls: dict[str, int] = field(default_factory=dict)  # aq's git calls in the drain, by command
    git_ms: float = 0.0  # their total time
    git_in_attempts: int = 0  # git calls made on an attempt's thread
    # derived
    summary: dict[str, Any] = field(default_factory=dict)


# --- one CLI's run ---------------------------------------------------------------------------

def python_env(env: Mapping[str, str], hook: Path | None = None,
               timing_log: Path | None = None) -> dict[str, str]:
    """The env of `python -m aq`: the CLI's own (which is not os.environ) plus what aq needs,
    and with `hook` the sitecustomize that logs timings to `timing_log`."""
    path = os.pathsep.join(str(p) for p in (hook, REPO) if p is not None)
    timing = {"AQ_BENCH_LOG": str(timing_log)} if timing_log is not None else {}
    return {**env, **IDENTITY, "PYTHONPATH": path, **timing}


def run_aq(root: Path, env: Mapping[str, str], *args: str, timeout: float = 60.0
           ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aq", *args], cwd=root, env=dict(env),
                          capture_output=True, text=True, timeout=timeout, check=False)


def build_queue(root: Path, cli: str, jobs: int, env: Mapping[str, str]) -> list[str]:
    """`aq init`, the CLI as default engine, `jobs` plain job files dropped into the inbox and
    committed (as `aq add` would leave them): the drain then pays only for running them."""
    done = run_aq(root.parent, env, "init", str(root))
    if done.returncode != 0:
        raise RuntimeError(f"aq init failed: {last_line(done.stderr or done.stdout)}")
    config = root / "aq.yaml"
    config.write_text(config.read_text().replace("default_engine: claude", f"default_engine: {cli}"))
    ids = [f"overhead-{index:02d}" for index in range(jobs)]
    for job_id in ids:
        (root / "queue" / "inbox" / f"{job_id}.md").write_text(BODY, encoding="utf-8")
    for args in (("add", "-A"), ("commit", "-q", "--no-verify", "-m", f"bench: {jobs} jobs")):
        subprocess.run(["git", *args], cwd=root, env=dict(env), check=True,
                       stdout=subprocess.DEVNULL)
    return ids


def cli_duration_ms(text: str) -> float | None:
    """The CLI's own duration_ms from its last `result` line: claude's at the top level,
    gemini's in `stats`. codex prints none."""
    for line in reversed(text.splitlines()):
        if not line.startswith("{"):
            continue
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and row.get("type") == "result":
            value = row.get("duration_ms", (row.get("stats") or {}).get("duration_ms"))
            return float(value) if isinstance(value, int | float) else None
    return None


def run_direct(cli: str, root: Path, env: Mapping[str, str]) -> tuple[float, int, float | None]:
    """The CLI with aq's built-in engine's command line, the prompt on stdin, in the queue's
    folder: wall ms from start to exit, the exit code, and its own duration_ms."""
    path = cli_path(cli)
    assert path is not None
    argv = [str(path), *ARGV[cli], *(["-"] if cli == "codex" else [])]
    prompt = BODY.strip() + "\n"  # aq's prompt for a job with no persona and no past failure
    start = time.perf_counter()
    try:
        done = subprocess.run(argv, cwd=root, env=dict(env), input=prompt.encode(),
                              capture_output=True, timeout=120, check=False)
    except subprocess.TimeoutExpired:
        return (time.perf_counter() - start) * 1000, -1, None
    wall = (time.perf_counter() - start) * 1000
    return wall, done.returncode, cli_duration_ms(done.stdout.decode("utf-8", "replace"))


def direct_round(fig: Figures, cli: str, root: Path, env: Mapping[str, str], runs: int) -> None:
    for _ in range(runs):
        wall, code, own = run_direct(cli, root, env)
        if code != 0:
            fig.direct_failed += 1
            continue
        fig.direct_ms.append(round(wall, 1))
        fig.direct_cli_ms.append(own)


def measure(cli: str, jobs: int, base: Path) -> Figures:
    """One CLI: a warm-up run, half the direct runs, the drain, the other half (so that a
    change of load on the machine weighs on both sides). The direct runs get the drain's env
    bar aq's own variables and the timing hook."""
    fig = Figures(cli, jobs)
    if cli_path(cli) is None:
        fig.error = f"{cli} is not installed in {TOOLS_BIN} (./test.sh installs it)"
        return fig
    hook = base / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    timing_log = base / f"timing-{cli}.jsonl"
    root = base / f"q-{cli}"
    with FakeModelAPI(REPLY) as api:
        cli_env = prepare(cli, base / f"home-{cli}", api.url)
        cli_env["PATH"] = os.pathsep.join((str(TOOLS_BIN), cli_env["PATH"]))
        env = python_env(cli_env)
        try:
            ids = build_queue(root, cli, jobs, env)
        except (RuntimeError, subprocess.CalledProcessError) as err:
            fig.error = f"could not make the queue: {err}"
            return fig
        # the CLI's first run in a fresh home writes its config: neither side should pay for it
        run_direct(cli, root, env)
        direct_round(fig, cli, root, env, (jobs + 1) // 2)
        drain_env = python_env(cli_env, hook, timing_log)
        began = time.time()
        start = time.perf_counter()
        try:
            done = run_aq(root, drain_env, "run", "--drain", "--poll", "0.1",
                          timeout=DRAIN_TIMEOUT_S[cli])
            fig.drain_exit = done.returncode
            if done.returncode != 0:
                fig.error = f"aq run exited {done.returncode}: {last_line(done.stderr or done.stdout)}"
        except subprocess.TimeoutExpired:
            fig.error = f"aq run --drain did not finish in {DRAIN_TIMEOUT_S[cli]:.0f}s"
        fig.drain_ms = round((time.perf_counter() - start) * 1000, 1)
        ended = began + fig.drain_ms / 1000
        direct_round(fig, cli, root, env, jobs // 2)
    order = read_attempts(fig, root, ids, began, ended)
    read_timings(fig, timing_log, order, began)
    summarize(fig)
    return fig


def last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else "(no output)"


# --- what the drain left ----------------------------------------------------------------------

def events_of(root: Path, job_id: str) -> list[dict[str, Any]]:
    path = root / "queue" / ".events" / f"{job_id}.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def seconds_of(ts: str) -> float:
    return datetime.fromisoformat(ts).timestamp()


def read_attempts(fig: Figures, root: Path, ids: Sequence[str], began: float, ended: float
                  ) -> list[str]:
    """Each job's first attempt: its `finished` event and its log. The time line is read from
    the events' timestamps: start-up, each claim to the next, the last finish to exit. Returns
    the ids of the jobs that ran, in the order they were claimed."""
    timeline: list[tuple[float, float, float]] = []  # claimed, finished, duration (seconds)
    ran: list[str] = []
    for job_id in ids:
        rows = events_of(root, job_id)
        claimed = next((r for r in rows if r.get("type") == "claimed"), None)
        finished = next((r for r in rows if r.get("type") == "finished"), None)
        if claimed is None or finished is None or "duration" not in finished:
            continue
        fig.version = fig.version or finished.get("engine_version")
        fig.outcomes.append(str(finished.get("outcome")))
        log = root / "queue" / ".logs" / job_id / "1.log"
        own = cli_duration_ms(log.read_text(errors="replace")) if log.is_file() else None
        timeline.append((seconds_of(claimed["ts"]), seconds_of(finished["ts"]),
                         float(finished["duration"])))
        fig.cli_ms.append(own)
        ran.append(job_id)
    order = sorted(range(len(timeline)), key=lambda i: timeline[i][0])
    timeline = [timeline[i] for i in order]
    fig.cli_ms = [fig.cli_ms[i] for i in order]
    fig.attempt_ms = [round(duration * 1000, 1) for _, _, duration in timeline]
    if len(timeline) < len(ids) and fig.error is None:
        fig.error = f"only {len(timeline)} of {len(ids)} jobs have a finished attempt"
    if not timeline:
        return []
    fig.startup_ms = round((timeline[0][0] - began) * 1000, 1)
    fig.between_ms = [round((nxt[0] - cur[0] - cur[2]) * 1000, 1)
                      for cur, nxt in itertools.pairwise(timeline)]
    fig.tail_ms = round((ended - timeline[-1][1]) * 1000, 1)
    return [ran[i] for i in order]


def git_command(args: Sequence[str]) -> str:
    """`commit` for `git -c user.name=aq -c ... commit -m ...`: the command past the options."""
    rest = list(args)
    while rest and rest[0].startswith("-"):
        rest = rest[2:] if rest[0] in ("-c", "-C") else rest[1:]
    return rest[0] if rest else "?"


def read_timings(fig: Figures, path: Path, order: Sequence[str], began: float) -> None:
    """The timing hook's log: git calls by command, and each attempt's parts (an attempt runs
    on a thread named `attempt-<job id>`)."""
    per_job: dict[str, dict[str, float]] = {job_id: {} for job_id in order}
    lines = path.read_text().splitlines() if path.is_file() else []
    for line in lines:
        call = json.loads(line)
        thread = str(call["thread"])
        job = per_job.get(thread.removeprefix("attempt-")) if thread.startswith("attempt-") else None
        if job is not None:
            job[call["what"]] = job.get(call["what"], 0.0) + call["seconds"] * 1000
        if call["what"] == "git":
            name = git_command(call["args"])
            fig.git_calls[name] = fig.git_calls.get(name, 0) + 1
            fig.git_ms += call["seconds"] * 1000
            fig.git_in_attempts += job is not None
    fig.git_ms = round(fig.git_ms, 1)
    if not lines:
        return
    fig.first_git_ms = round((min(json.loads(line)["start"] for line in lines) - began) * 1000, 1)
    parts = [per_job[job_id] for job_id in order]
    fig.engine_ms = [round(part.get("run_streaming", 0.0), 1) for part in parts]
    fig.probe_ms = [round(part.get("engine_version", 0.0), 1) for part in parts]
    fig.proctree_ms = [round(part.get("proctree", 0.0), 1) for part in parts]


# --- figures ----------------------------------------------------------------------------------

def summarize(fig: Figures) -> None:
    """The figures the issue asks for. Overheads against the direct runs subtract their median
    from each attempt (the runs are not paired); against duration_ms, attempt by attempt."""
    direct = statistics.median(fig.direct_ms) if fig.direct_ms else None
    vs_cli = [a - c for a, c in zip(fig.attempt_ms, fig.cli_ms, strict=True) if c is not None]
    startup = [d - c for d, c in zip(fig.direct_ms, fig.direct_cli_ms, strict=True) if c is not None]
    vs_direct = [a - direct for a in fig.attempt_ms] if direct is not None else []
    own = Spread.of(vs_direct)
    s: dict[str, Any] = {
        "attempt": Spread.of(fig.attempt_ms),
        "cli_duration": Spread.of([c for c in fig.cli_ms if c is not None]),
        "direct_wall": Spread.of(fig.direct_ms),
        "direct_cli_duration": Spread.of([c for c in fig.direct_cli_ms if c is not None]),
        "cli_startup": Spread.of(startup),  # the direct run's wall minus its own duration_ms
        "overhead_vs_cli_duration": Spread.of(vs_cli),
        "overhead_vs_direct": own,
        "later_overhead_vs_direct": Spread.of(vs_direct[1:]),
        "first_overhead_vs_direct_ms": round(vs_direct[0], 1) if vs_direct else None,
        "version_probe_ms": round(sum(fig.probe_ms), 1) if fig.probe_ms else None,
        "parts": parts_of(fig, direct),
        "between_attempts": Spread.of(fig.between_ms),
        "target_ms": TARGET_MS,
        "verdict": ("ERR" if fig.error or own.median_ms is None
                    else "PASS" if own.median_ms < TARGET_MS else "MISS"),
    }
    if fig.drain_ms is not None and fig.attempt_ms:
        per_job = fig.drain_ms / len(fig.attempt_ms)
        s["drain_per_job_ms"] = round(per_job, 1)
        s["drain_per_job_minus_direct_ms"] = round(per_job - direct, 1) if direct else None
        s["drain_x_direct"] = round(per_job / direct, 2) if direct else None
        s["git_per_job"] = {"calls": round(sum(fig.git_calls.values()) / len(fig.attempt_ms), 1),
                            "ms": round(fig.git_ms / len(fig.attempt_ms), 1)}
    fig.summary = s


def parts_of(fig: Figures, direct: float | None) -> dict[str, float] | None:
    """(a) - (c) taken apart with the timing hook's figures, as means over the attempts: means
    add up (medians do not). The probe counts once, spread over every attempt."""
    if direct is None or not fig.engine_ms or len(fig.engine_ms) != len(fig.attempt_ms):
        return None

    def mean(values: Sequence[float]) -> float:
        return round(statistics.fmean(values), 1)

    engine = [e - direct for e in fig.engine_ms]
    rest = [a - e - v for a, e, v in zip(fig.attempt_ms, fig.engine_ms, fig.probe_ms, strict=True)]
    return {"engine_minus_direct": mean(engine), "proctree": mean(fig.proctree_ms),
            "version_probe": mean(fig.probe_ms), "rest": mean(rest),
            "total": mean([a - direct for a in fig.attempt_ms])}


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def render(fig: Figures) -> str:
    s = fig.summary
    head = f"{fig.cli} {fig.version or '(version unknown)'}: {len(fig.attempt_ms)} of {fig.jobs} jobs ran"
    if fig.outcomes and set(fig.outcomes) != {"ok"}:
        head += f" (outcomes: {', '.join(sorted(set(fig.outcomes)))})"
    lines = [head]
    if fig.error:
        lines.append(f"  ERROR: {fig.error}")
    if not s:
        return "\n".join(lines)
    if fig.direct_failed:
        lines.append(f"  {fig.direct_failed} direct run(s) exited non-zero and are left out")

    rows: list[tuple[str, str, str, str]] = []

    def row(label: str, spread: Spread, note: str = "") -> None:
        rows.append((label, ms(spread.median_ms), ms(spread.p90_ms), note))

    no_own = " (codex prints no duration_ms)" if fig.cli == "codex" else ""
    row("(a) attempt: aq's `duration`", s["attempt"], "engine + verify + aq's work in the attempt")
    row("(b) CLI's own duration_ms under aq", s["cli_duration"], no_own.strip())
    row("(c) CLI run directly: wall", s["direct_wall"],
        f"its own duration_ms {ms(s['direct_cli_duration'].median_ms)}; start-up "
        f"(wall - duration_ms) {ms(s['cli_startup'].median_ms)}")
    row("(a) - (b): the issue's overhead", s["overhead_vs_cli_duration"],
        "includes the CLI's own start-up" + no_own)
    own = s["overhead_vs_direct"]
    row("(a) - (c): aq's own share", own,
        f"target < {TARGET_MS:.0f} ms: {s['verdict']}")
    row("  attempts 2..N - (c)", s["later_overhead_vs_direct"], "after the --version probe")
    rows.append(("  first attempt - (c)", ms(s["first_overhead_vs_direct_ms"]), "",
                 f"it ran `{fig.cli} --version` for the engine_version: "
                 f"{ms(s['version_probe_ms'])} ms (once per aq process)"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines.append(f"  {'':{widths[0]}}  {'median':>{widths[1]}}  {'p90':>{widths[2]}}   (ms)")
    for label, med, p90, note in rows:
        lines.append(f"  {label:{widths[0]}}  {med:>{widths[1]}}  {p90:>{widths[2]}}   {note}".rstrip())
    parts = s["parts"]
    if parts is not None:
        lines += [
            "  where (a) - (c) goes, mean ms an attempt (means add up, medians do not):",
            f"    {ms(parts['engine_minus_direct']):>5}  the CLI as aq runs it (aq.infra.proc.run_streaming: "
            f"spawn, pipes, exit polling) minus (c); of it /proc looks {parts['proctree']:.1f}",
            f"    {ms(parts['version_probe']):>5}  `{fig.cli} --version` for engine_version, "
            f"{ms(s['version_probe_ms'])} ms on the first attempt only",
            f"    {ms(parts['rest']):>5}  the rest of the attempt: prompt, log, usage, artifacts",
            f"    {ms(parts['total']):>5}  mean (a) - (c)",
        ]
    if "drain_per_job_ms" in s:
        git = s["git_per_job"]
        calls = ", ".join(f"{name} {count}" for name, count in
                          sorted(fig.git_calls.items(), key=lambda item: -item[1]))
        lines += [
            f"  aq run --drain: {ms(fig.drain_ms)} ms for {len(fig.attempt_ms)} jobs = "
            f"{ms(s['drain_per_job_ms'])} ms a job, beside (c) {ms(s['direct_wall'].median_ms)} ms: "
            f"x{s['drain_x_direct']}, +{ms(s['drain_per_job_minus_direct_ms'])} ms a job",
            f"    start-up to the first claim {ms(fig.startup_ms)} ms (to aq's first git "
            f"call: {ms(fig.first_git_ms)}); between attempts (claim "
            f"to next claim minus the attempt) median {ms(s['between_attempts'].median_ms)} ms; "
            f"last finish to exit {ms(fig.tail_ms)} ms",
            f"    git: {git['calls']} calls, {ms(git['ms'])} ms a job "
            f"({fig.git_in_attempts} inside attempts); {calls}",
        ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cli", choices=(*NAMES, "all"), default="claude",
                        help="which agent CLI (default claude)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="jobs in the drain and direct runs (default 10; 3 with --quick)")
    parser.add_argument("--quick", action="store_true", help="3 jobs: a smoke run")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    args = parser.parse_args(argv)
    jobs = max(2, args.jobs or (3 if args.quick else 10))
    clis = NAMES if args.cli == "all" else (args.cli,)
    compile_aq()
    load_before = load_average()
    results: list[Figures] = []
    with tempfile.TemporaryDirectory(prefix="aq-bench-agents-") as tmp:
        for cli in clis:
            print(f"{cli}: {jobs} jobs under aq run --drain, {jobs} direct runs ...", file=sys.stderr)
            results.append(measure(cli, jobs, Path(tmp)))
    load = {"before": load_before, "after": load_average()}
    if args.json:
        print(json.dumps({"python": platform.python_version(), "platform": platform.platform(),
                          "cpus": os.cpu_count(), "load_average_1m": load, "jobs": jobs,
                          "results": [asdict(fig) for fig in results]}, indent=2))
        return 0
    print(f"python {platform.python_version()} on {platform.platform()}, {os.cpu_count()} CPUs; "
          f"1-min load average {load['before']} before, {load['after']} after; fake model API; "
          f"{jobs} jobs a CLI\n")
    print("\n\n".join(render(fig) for fig in results))
    print(f"\n(a) - (c) subtracts the median direct wall time from each attempt; (a) - (b) "
          f"subtracts each attempt's own duration_ms, which leaves in the CLI's start-up. "
          f"Target: aq's own share under {TARGET_MS:.0f} ms, median.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
