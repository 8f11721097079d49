"""How long a person waits for `aq ls`, `aq next`, `aq lint` and `aq --help` on a big queue.

Builds queues of 1,000 and 10,000 inbox jobs in a temp dir (files dropped into queue/inbox the
way a person or a script would, then one git commit), and times each command as a whole
process, start to exit, beside `python -c pass` measured in the same rounds. It prints figures
and asserts nothing: see benchmarks/README.md.

    python benchmarks/bench_queue.py            # 1,000 and 10,000 jobs, 7 runs each
    python benchmarks/bench_queue.py --quick    # 1,000 jobs, 3 runs: a smoke run
    python benchmarks/bench_queue.py --json     # the same figures as JSON on stdout
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aq.usecases.setup import init_queue

PRIORITIES = ("critical", "high", "medium", "low")
PRIORITY_WEIGHTS = (1, 3, 4, 2)
LOCKS = ("db-migrations", "frontend-build", "release", "docs-site", "api-schema")
AREAS = ("parser", "login page", "billing", "search index", "cli", "docs", "api client", "cache")
VERBS = ("Fix", "Refactor", "Add tests for", "Speed up", "Document", "Remove dead code in")
ADDED_AT = datetime(2026, 1, 1, tzinfo=UTC)

# Targets from issue 2 ("Speed"): seconds of whole-process wall time, median.
TARGETS: dict[tuple[str, int | None], float] = {
    ("ls", 1000): 0.15, ("ls", 10000): 0.5,
    ("next", 1000): 0.15, ("next", 10000): 0.5,
    ("help", None): 0.15,
}
# Targets from issue 14 ("The house"): median over the median of `python -c pass` of the same
# interpreter in the same rounds, which a busy machine inflates less than seconds.
RATIO_TARGETS: dict[tuple[str, int | None], float] = {("ls", 1000): 5.0, ("next", 1000): 5.0}


@dataclass(frozen=True, slots=True)
class Command:
    key: str  # "python", "help", "ls", "next", "lint": what the target table is keyed on
    label: str
    via: str  # "-m": sys.executable -m aq; "script": the `aq` console script; "-" for python
    argv: tuple[str, ...]
    reads_queue: bool


@dataclass(slots=True)
class Figures:
    command: str
    via: str
    jobs: int
    cold_s: float
    median_s: float = 0.0
    min_s: float = 0.0
    runs_s: list[float] = field(default_factory=list)
    ratio: float | None = None
    target_s: float | None = None
    target_ratio: float | None = None
    verdict: str = "-"
    peak_rss_kib: int | None = None
    exit_codes: list[int] = field(default_factory=list)  # the cold run's, then each timed run's
    first_error: str | None = None  # the last stderr line of the first run that failed

    def failed_runs(self) -> int:
        return sum(1 for code in self.exit_codes if code != 0)


# --- building a queue -------------------------------------------------------------------------

def job_id(index: int) -> str:
    return f"job-{index:05d}"


def job_text(index: int, rng: random.Random) -> str:
    """One job file: YAML frontmatter with the keys people use, and a body of a few lines."""
    area = rng.choice(AREAS)
    title = f"{rng.choice(VERBS)} {area} (item {index})"
    lines = ["---", f"title: {json.dumps(title)}",
             f"priority: {rng.choices(PRIORITIES, PRIORITY_WEIGHTS)[0]}"]
    if index > 3 and rng.random() < 0.2:  # a fifth wait on earlier jobs: no cycles, all exist
        deps = rng.sample(range(index), rng.randint(1, 3))
        lines.append(f"deps: [{', '.join(job_id(d) for d in sorted(deps))}]")
    if rng.random() < 0.1:
        lines.append(f"lock: {rng.choice(LOCKS)}")
    if rng.random() < 0.3:
        test_file = "tests/test_" + area.replace(" ", "_") + ".py"
        lines.append(f"verify: {json.dumps('pytest -q ' + test_file)}")
    if rng.random() < 0.15:
        lines.append(f"timeout: {rng.choice(('20m', '45m', '2h'))}")
    if rng.random() < 0.2:
        lines.append("engine: shell")
    lines += ["---", "", f"# {title}", "",
              f"The {area} misbehaves when the input is large (see issue {rng.randint(1, 999)}).",
              "Find the cause, fix it, and add a test that fails before the fix.",
              "Keep the change small; do not touch unrelated files.", ""]
    return "\n".join(lines)


def added_event(index: int) -> str:
    ts = (ADDED_AT + timedelta(seconds=index)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return json.dumps({"ts": ts, "type": "added", "by": "bench@host", "to": "inbox"},
                      separators=(",", ":")) + "\n"


def build_queue(root: Path, jobs: int, seed: int) -> None:
    """A queue of `jobs` inbox jobs, half with an `added` event log, committed once."""
    init_queue(root)
    rng = random.Random(seed)
    inbox = root / "queue" / "inbox"
    events = root / "queue" / ".events"
    events.mkdir(parents=True, exist_ok=True)
    for index in range(jobs):
        (inbox / f"{job_id(index)}.md").write_text(job_text(index, rng), encoding="utf-8")
        if index % 2 == 0:
            (events / f"{job_id(index)}.jsonl").write_text(added_event(index), encoding="utf-8")
    commit_all(root, f"bench: {jobs} jobs")


def commit_all(root: Path, message: str) -> None:
    """Commit everything in `root` as the benchmark, whatever the machine's git config says."""
    git(root, "add", "-A")
    git(root, "-c", "user.name=bench", "-c", "user.email=bench@example.invalid",
        "-c", "commit.gpgsign=false", "commit", "-q", "--no-verify", "-m", message)


def child_env() -> dict[str, str]:
    """The parent's env without GIT_* (a hook's env must not leak in) and without AQ_QUEUE."""
    return {k: v for k, v in os.environ.items() if not k.startswith("GIT_") and k != "AQ_QUEUE"}


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, env=child_env(), check=True,
                   stdout=subprocess.DEVNULL)


def drop_manifest_cache(root: Path) -> None:
    """Make the next aq command pay for parsing every manifest, as after a fresh clone."""
    for path in (root / ".git" / "aq" / "cache.pickle", root / "queue" / ".state" / "cache.pickle"):
        path.unlink(missing_ok=True)


# --- timing ------------------------------------------------------------------------------------

def commands() -> list[Command]:
    python = sys.executable
    found: list[Command] = [Command("python", "python -c pass", "-", (python, "-c", "pass"), False)]
    script = Path(python).parent / "aq"
    launchers = [("-m", (python, "-m", "aq"))]
    if script.is_file():
        launchers.append(("script", (str(script),)))
    elif shutil.which("aq"):
        launchers.append(("script", (str(shutil.which("aq")),)))
    for via, prefix in launchers:
        found += [
            Command("help", "aq --help", via, (*prefix, "--help"), False),
            Command("ls", "aq ls --json", via, (*prefix, "ls", "--json"), True),
            Command("next", "aq next --json", via, (*prefix, "next", "--json"), True),
            Command("lint", "aq lint", via, (*prefix, "lint"), True),
        ]
    return found


@dataclass(frozen=True, slots=True)
class Run:
    seconds: float
    exit_code: int
    stderr: str


def timed(argv: Sequence[str], cwd: Path) -> Run:
    """Wall seconds from start to exit of one process. Its output is discarded, stderr kept."""
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=child_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, check=False)
    seconds = time.perf_counter() - start
    return Run(seconds, done.returncode, done.stderr.decode("utf-8", "replace"))


def record(fig: Figures, run: Run) -> None:
    """Keep the exit code; a failed run is timed too, so it must be seen beside the figures."""
    fig.exit_codes.append(run.exit_code)
    if run.exit_code != 0 and fig.first_error is None:
        lines = run.stderr.strip().splitlines()
        fig.first_error = lines[-1] if lines else f"exit code {run.exit_code}, no output"


def peak_rss_kib(argv: Sequence[str], cwd: Path) -> int | None:
    """Peak resident memory of one run, in KiB: GNU time if present, else a one-child wrapper.

    getrusage(RUSAGE_CHILDREN) in this process would be the maximum over every child so far,
    so each figure comes from a fresh process that has exactly one child.
    """
    gnu_time = Path("/usr/bin/time")
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as out:
        if gnu_time.is_file():
            wrapper = [str(gnu_time), "-f", "%M", "-o", out.name, *argv]
        else:
            probe = ("import resource, subprocess, sys; "
                     "subprocess.run(sys.argv[2:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
                     "kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss; "
                     "open(sys.argv[1], 'w').write(str(kib // 1024 if sys.platform == 'darwin' else kib))")
            wrapper = [sys.executable, "-c", probe, out.name, *argv]
        subprocess.run(wrapper, cwd=cwd, env=child_env(), stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)
        text = Path(out.name).read_text().strip().splitlines()
    try:
        return int(text[-1])
    except (IndexError, ValueError):
        return None


def measure(root: Path, jobs: int, runs: int, cmds: list[Command]) -> list[Figures]:
    """Cold run each (no manifest cache), one warm-up round, then `runs` interleaved rounds."""
    figures: dict[Command, Figures] = {}
    for cmd in cmds:
        drop_manifest_cache(root)
        run = timed(cmd.argv, root)
        figures[cmd] = Figures(cmd.label, cmd.via, jobs, cold_s=run.seconds)
        record(figures[cmd], run)
    for cmd in cmds:
        timed(cmd.argv, root)
    # Interleaved rounds: a noisy moment on the machine spreads over every command, python too.
    for _ in range(runs):
        for cmd in cmds:
            run = timed(cmd.argv, root)
            figures[cmd].runs_s.append(run.seconds)
            record(figures[cmd], run)
    for cmd in cmds:
        figures[cmd].peak_rss_kib = peak_rss_kib(cmd.argv, root)
    baseline = statistics.median(next(f for c, f in figures.items() if c.key == "python").runs_s)
    for cmd, fig in figures.items():
        fig.median_s = statistics.median(fig.runs_s)
        fig.min_s = min(fig.runs_s)
        fig.ratio = fig.median_s / baseline if baseline else None
        fig.target_s = TARGETS.get((cmd.key, jobs), TARGETS.get((cmd.key, None)))
        fig.target_ratio = RATIO_TARGETS.get((cmd.key, jobs))
        fig.verdict = verdict(fig)
    return list(figures.values())


def verdict(fig: Figures) -> str:
    """PASS when the median meets every target it has (seconds, ratio to python), else MISS."""
    if fig.target_s is None and fig.target_ratio is None:
        return "-"
    if fig.failed_runs():
        return "ERR"  # a figure from a run that failed says nothing about the target
    met = [fig.median_s < fig.target_s] if fig.target_s is not None else []
    if fig.target_ratio is not None:
        met.append(fig.ratio is not None and fig.ratio <= fig.target_ratio)
    return "PASS" if all(met) else "MISS"


# --- reporting ---------------------------------------------------------------------------------

def render_table(rows: list[Figures], runs: int) -> str:
    head = ("command", "via", "jobs", "cold s", "median s", "min s", "x python", "target s",
            "target x", "", "peak RSS MiB")
    body = [head]
    for f in rows:
        failed = f.failed_runs()
        note = f" ({failed}/{len(f.exit_codes)} runs failed)" if failed else ""
        body.append((
            f.command + note, f.via, f"{f.jobs:,}", f"{f.cold_s:.3f}", f"{f.median_s:.3f}",
            f"{f.min_s:.3f}", f"{f.ratio:.1f}" if f.ratio is not None else "-",
            f"< {f.target_s:g}" if f.target_s is not None else "-",
            f"<= {f.target_ratio:g}" if f.target_ratio is not None else "-", f.verdict,
            f"{f.peak_rss_kib / 1024:.0f}" if f.peak_rss_kib is not None else "?",
        ))
    widths = [max(len(row[i]) for row in body) for i in range(len(head))]
    left = {0, 1, 9}
    lines = ["  ".join(cell.ljust(w) if i in left else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
             for row in body]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for f in rows:
        if f.first_error:
            lines.append(f"{f.command} ({f.via}, {f.jobs:,} jobs) failed: {f.first_error}")
    lines.append(f"\nmedian and min of {runs} runs after one warm-up; cold = first run with no "
                 "manifest cache (as after a fresh clone); x python = median / median of "
                 "`python -c pass`.")
    return "\n".join(lines)


def machine() -> dict[str, object]:
    return {"python": platform.python_version(), "executable": sys.executable,
            "platform": platform.platform(), "cpus": os.cpu_count(),
            "rss_tool": "/usr/bin/time" if Path("/usr/bin/time").is_file() else "getrusage wrapper"}


def load_average() -> float | None:
    """The 1-minute load average: other work on the machine inflates every figure."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def compile_aq() -> None:
    """Write aq's .pyc files first, as any install does: with PYTHONDONTWRITEBYTECODE set (some
    sandboxes set it) an editable checkout would otherwise compile every module on every run,
    about 50 ms of each command that no installed aq pays."""
    import compileall

    import aq

    compileall.compile_dir(str(Path(aq.__file__).parent), quiet=1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=None, help="timed runs per command (default 7; 3 with --quick)")
    parser.add_argument("--quick", action="store_true", help="1,000 jobs only, 3 runs: a smoke run")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    parser.add_argument("--seed", type=int, default=2026, help="seed of the generated queue")
    args = parser.parse_args(argv)
    runs = max(1, args.runs or (3 if args.quick else 7))
    sizes = (1000,) if args.quick else (1000, 10000)
    compile_aq()
    cmds = commands()
    rows: list[Figures] = []
    build_s: dict[int, float] = {}
    load_before = load_average()
    for jobs in sizes:
        with tempfile.TemporaryDirectory(prefix=f"aq-bench-{jobs}-") as tmp:
            root = Path(tmp) / "repo"
            print(f"building a queue of {jobs:,} jobs in {root} ...", file=sys.stderr)
            start = time.perf_counter()
            build_queue(root, jobs, args.seed)
            build_s[jobs] = time.perf_counter() - start
            print(f"  built and committed in {build_s[jobs]:.1f}s; timing {len(cmds)} commands "
                  f"x {runs} runs ...", file=sys.stderr)
            rows += measure(root, jobs, runs, cmds)
    load = {"before": load_before, "after": load_average()}
    if args.json:
        print(json.dumps({"machine": machine(), "load_average_1m": load, "runs": runs,
                          "build_s": build_s, "results": [asdict(f) for f in rows]}, indent=2))
    else:
        info = machine()
        print(f"python {info['python']} on {info['platform']}, {info['cpus']} CPUs; "
              f"peak RSS via {info['rss_tool']}; 1-min load average {load['before']} before, "
              f"{load['after']} after\n")
        print(render_table(rows, runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
