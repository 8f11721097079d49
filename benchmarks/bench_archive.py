"""What a big archive costs the everyday commands: `aq ls --stage inbox`, `aq next` and one
`aq run --once` on a queue with N archived jobs, beside the same queue without them.

Both queues hold the same 100 trivial inbox jobs (`engine: shell`, body `true`). The big one
also holds N jobs in its archive as `aq archive` leaves them (a job file, an event log of 10
events, a log for one job in ten), spread over twelve months: on the archive's own ref,
refs/aq/archive/main, in queue/.archive/<yyyy>/<mm>/<nnn>/ (with --on-branch: on the queue's
branch in queue/archive/, where earlier aq kept it). Each queue is made by `git fast-import`
into a bare remote and cloned, as a machine of a fleet has it; a first `aq ls --fetch` checks
the archive out (timed apart); then the commands run as whole processes in the clones,
interleaved round by round with `python -c pass`. It prints figures and asserts nothing (see
benchmarks/README.md).

    python benchmarks/bench_archive.py                 # 100,000 archived jobs, 5 runs
    python benchmarks/bench_archive.py --jobs 20000    # a smaller archive
    python benchmarks/bench_archive.py --on-branch     # the archive on the branch, as before
    python benchmarks/bench_archive.py --json          # the same figures as JSON on stdout
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aq.core.events import iso
from aq.usecases.setup import init_queue

LIVE_JOBS = 100
EVENTS_PER_JOB = 10
PART_SIZE = 1000
TARGET_RATIO = 1.5  # issue 17 ("Speed"): the big queue's median at most 1.5x the small one's
IDENTITY = ("-c", "user.name=bench", "-c", "user.email=bench@example.invalid")

# Written into a folder on the children's PYTHONPATH: every git call aq makes, timed.
SITECUSTOMIZE = '''\
"""Written by benchmarks/bench_archive.py: time every git call aq makes."""
import json, os, time
if os.environ.get("AQ_BENCH_GIT_LOG"):
    import aq.infra.gitops
    _real = aq.infra.gitops.git
    _fd = os.open(os.environ["AQ_BENCH_GIT_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _timed(root, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return _real(root, *args, **kwargs)
        finally:
            call = {"args": list(args), "seconds": time.perf_counter() - t0}
            os.write(_fd, (json.dumps(call) + "\\n").encode())

    aq.infra.gitops.git = _timed
'''


@dataclass(slots=True)
class Figures:
    command: str
    small_s: list[float] = field(default_factory=list)
    big_s: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def median(self, runs: Sequence[float]) -> float:
        return statistics.median(runs) if runs else float("nan")

    @property
    def ratio(self) -> float:
        return self.median(self.big_s) / self.median(self.small_s)


# --- building the queues --------------------------------------------------------------------------

def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "AQ_"))}
    return {**env, **(extra or {})}


def git(root: Path, *args: str, stdin: bytes | None = None) -> str:
    done = subprocess.run(["git", *IDENTITY, *args], cwd=root, input=stdin, env=child_env(),
                          capture_output=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"git {' '.join(args)} failed in {root}: {done.stderr.decode()[-500:]}")
    return done.stdout.decode()


def seed_files(base: Path) -> dict[str, bytes]:
    """What `aq init` makes (aq.yaml with the shell engine, profiles, stage folders)."""
    seed = base / "seed"
    init_queue(seed)
    config = seed / "aq.yaml"
    config.write_text(config.read_text().replace("default_engine: claude", "default_engine: shell"))
    files = {}
    for path in seed.rglob("*"):
        rel = path.relative_to(seed)
        if path.is_file() and rel.parts[0] != ".git":
            files[str(rel)] = path.read_bytes()
    shutil.rmtree(seed)
    return files


def live_files() -> Iterator[tuple[str, bytes]]:
    added = datetime.now(UTC) - timedelta(hours=1)
    for index in range(LIVE_JOBS):
        job_id = f"task-{index:03d}"
        yield f"queue/inbox/{job_id}.md", f"---\ntitle: task {index}\n---\ntrue\n".encode()
        event = {"ts": iso(added + timedelta(seconds=index)), "type": "added", "by": "bench@host",
                 "to": "inbox"}
        yield f"queue/.events/{job_id}.jsonl", (json.dumps(event) + "\n").encode()


def archived_events(job_id: str, final: datetime, part: str) -> bytes:
    """Ten events: added, three attempts (two retried), a person's ship, the archive's move."""
    events: list[dict[str, object]] = [{"ts": iso(final - timedelta(hours=3)), "type": "added",
                                        "by": "me@host", "to": "inbox"}]
    for attempt in (1, 2, 3):
        start = final - timedelta(hours=3 - attempt * 0.5)
        token = f"{attempt}.w{attempt}.{job_id[-6:]}"
        events.append({"ts": iso(start), "type": "claimed", "by": f"w{attempt}", "from": "inbox",
                       "to": "building", "attempt": attempt, "token": token, "host": "m1"})
        last = attempt == 3
        events.append({"ts": iso(start + timedelta(minutes=20)), "type": "finished",
                       "by": f"w{attempt}", "from": "building", "to": "testing" if last else "inbox",
                       "action": "pass" if last else "retry", "attempt": attempt, "token": token,
                       "outcome": "ok" if last else "verify_failed", "duration": 1200.0,
                       "log": f"queue/.logs/{job_id}/{attempt}.log"})
    events.append({"ts": iso(final), "type": "moved", "by": "me@host", "from": "testing",
                   "to": "shipped", "action": "ship", "why": "ship by me@host"})
    events.append({"ts": iso(final + timedelta(days=15)), "type": "archived", "by": "me@host",
                   "part": part, "why": f"final since {iso(final)[:10]}: moved to {part}"})
    return "".join(json.dumps(event, separators=(",", ":")) + "\n" for event in events).encode()


def archived_files(count: int, folder: str) -> Iterator[tuple[str, bytes]]:
    """`count` shipped jobs as `aq archive` leaves them in `folder` (queue/.archive, or the
    branch's queue/archive), over the twelve months before last."""
    newest = datetime.now(UTC) - timedelta(days=30)
    span = timedelta(days=365)
    filling: dict[tuple[int, int], list[int]] = {}
    for index in range(count):
        final = newest - span + span * (index / max(1, count))
        key = (final.year, final.month)
        part_of = filling.setdefault(key, [1, 0])
        if part_of[1] == PART_SIZE:
            part_of[0], part_of[1] = part_of[0] + 1, 0
        part_of[1] += 1
        part = f"{folder}/{final.year:04d}/{final.month:02d}/{part_of[0]:03d}"
        job_id = f"done-{index:06d}"
        body = f"---\ntitle: finished work {index}\npriority: medium\n---\nFix item {index}.\n"
        yield f"{part}/shipped/{job_id}.md", body.encode()
        yield f"{part}/.events/{job_id}.jsonl", archived_events(job_id, final, part)
        if index % 10 == 0:
            yield f"{part}/.logs/{job_id}/3.log", f"[aq] job {job_id} attempt 3\nok\n".encode()


def fast_import(bare: Path, commits: Mapping[str, Iterator[tuple[str, bytes]]]) -> int:
    """A commit on each ref of `commits` holding its files, streamed into the bare repo by git
    fast-import: the files written."""
    proc = subprocess.Popen(["git", "fast-import", "--quiet"], cwd=bare, stdin=subprocess.PIPE,
                            env=child_env())
    assert proc.stdin is not None
    count = 0
    with proc.stdin as out:
        for ref, files in commits.items():
            message = f"bench: {ref}".encode()
            out.write(f"commit {ref}\ncommitter bench <bench@example.invalid> ".encode()
                      + f"{int(time.time())} +0000\n".encode()
                      + f"data {len(message)}\n".encode() + message + b"\n")
            for path, data in files:
                out.write(f"M 100644 inline {path}\ndata {len(data)}\n".encode() + data + b"\n")
                count += 1
    if proc.wait() != 0:
        raise SystemExit("git fast-import failed")
    return count


def build(base: Path, name: str, archived: int, seed: Mapping[str, bytes], on_branch: bool
          ) -> tuple[Path, float, int]:
    """A bare remote holding the queue and a clone of it: the clone, seconds, files."""
    start = time.perf_counter()
    bare = base / f"{name}.git"
    bare.mkdir(parents=True)
    git(bare, "init", "-q", "--bare", "-b", "main")

    def branch() -> Iterator[tuple[str, bytes]]:
        yield from seed.items()
        yield from live_files()
        if on_branch:
            yield from archived_files(archived, "queue/archive")

    commits = {"refs/heads/main": branch()}
    if archived and not on_branch:
        commits["refs/aq/archive/main"] = archived_files(archived, "queue/.archive")
    files = fast_import(bare, commits)
    clone = base / name
    git(base, "clone", "-q", str(bare), str(clone))
    return clone, time.perf_counter() - start, files


# --- timing --------------------------------------------------------------------------------------

def timed(argv: Sequence[str], cwd: Path, env: Mapping[str, str]) -> tuple[float, str | None]:
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=dict(env), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, check=False)
    seconds = time.perf_counter() - start
    error = None if done.returncode == 0 else (done.stderr.decode(errors="replace").strip()
                                               .splitlines() or ["no output"])[-1]
    return seconds, error


COMMANDS = {
    "aq ls --stage inbox --json": ("ls", "--stage", "inbox", "--json"),
    "aq next --json": ("next", "--json"),
    "aq run --once (trivial job)": ("run", "--once", "--worker", "bench"),
}
FLOOR = "git floor: mv+commit+push"  # the least git does to claim, with no aq at all


def floor_claim(root: Path) -> tuple[float, str | None]:
    """The last inbox job renamed, committed and pushed by git alone: what a claim costs git in
    this clone, however aq makes it. (To review, not building: a building job without a lease
    would be taken back by the next `aq run --once`, which would then do more than claim.)"""
    start = time.perf_counter()
    job = max(path.name for path in (root / "queue" / "inbox").glob("*.md"))
    git(root, "mv", f"queue/inbox/{job}", f"queue/review/{job}")
    git(root, "commit", "-q", "--no-verify", "-m", f"claim {job} by hand")
    git(root, "push", "-q", "origin", "HEAD:main")
    return time.perf_counter() - start, None


def measure(small: Path, big: Path, runs: int) -> tuple[list[Figures], list[float]]:
    """Median of `runs` interleaved rounds after one warm-up round (which also builds the
    manifest cache, as the first command after a clone does)."""
    env = child_env()
    figures = {label: Figures(label) for label in (*COMMANDS, FLOOR)}
    python: list[float] = []
    for round_ in range(runs + 1):
        seconds, _ = timed([sys.executable, "-c", "pass"], small, env)
        if round_:
            python.append(seconds)
        for label in figures:
            for root, runs_of in ((small, figures[label].small_s), (big, figures[label].big_s)):
                seconds, error = floor_claim(root) if label == FLOOR else timed(
                    [sys.executable, "-m", "aq", *COMMANDS[label]], root, env)
                if error:
                    figures[label].failures.append(f"{root.name}: {error}")
                if round_:
                    runs_of.append(seconds)
    return list(figures.values()), python


def git_calls(root: Path, hook: Path, log: Path) -> list[tuple[str, int, float]]:
    """One more `aq run --once`, its git calls timed: (git subcommand, calls, seconds)."""
    env = child_env({"PYTHONPATH": os.pathsep.join(filter(None, (str(hook), os.environ.get(
        "PYTHONPATH")))), "AQ_BENCH_GIT_LOG": str(log)})
    timed([sys.executable, "-m", "aq", "run", "--once", "--worker", "bench"], root, env)
    totals: dict[str, list[float]] = {}
    with contextlib.suppress(FileNotFoundError):
        for line in log.read_text().splitlines():
            call = json.loads(line)
            words = [arg for arg in call["args"] if not arg.startswith("-") and "=" not in arg]
            totals.setdefault(" ".join(words[:1]) or "?", []).append(call["seconds"])
    return sorted(((name, len(times), sum(times)) for name, times in totals.items()),
                  key=lambda item: -item[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000, help="archived jobs (default 100,000)")
    parser.add_argument("--runs", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--on-branch", action="store_true",
                        help="the archive on the queue's branch (queue/archive), as earlier aq kept it")
    parser.add_argument("--json", action="store_true", help="figures as JSON on stdout")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (its path is printed)")
    options = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="aq-bench-archive-"))
    try:
        report = run(base, options.jobs, options.runs, options.on_branch)
    finally:
        if options.keep:
            print(f"kept {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)
    if options.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)


def index_mib(root: Path) -> float:
    """The git index's size, its shared part too once git keeps it split (core.splitIndex; the
    largest shared file: an older one may linger until git expires it)."""
    shared = max((path.stat().st_size for path in (root / ".git").glob("sharedindex.*")), default=0)
    return round(((root / ".git" / "index").stat().st_size + shared) / 1048576, 1)


def run(base: Path, archived: int, runs: int, on_branch: bool) -> dict[str, object]:
    load = os.getloadavg()[0]
    seed = seed_files(base)
    small, small_build, small_files = build(base, "small", 0, seed, on_branch)
    big, big_build, big_files = build(base, "big", archived, seed, on_branch)
    first_sync = {name: round(timed([sys.executable, "-m", "aq", "ls", "--fetch"], root,
                                    child_env())[0], 2) for name, root in (("small", small), ("big", big))}
    figures, python = measure(small, big, runs)
    hook = base / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    calls = {name: git_calls(root, hook, base / f"{name}-git.jsonl")
             for name, root in (("small", small), ("big", big))}
    return {
        "archived_jobs": archived, "live_jobs": LIVE_JOBS, "events_per_archived_job": EVENTS_PER_JOB,
        "archive_on": "branch" if on_branch else "ref", "first_sync_s": first_sync,
        "files": {"small": small_files, "big": big_files},
        "build_s": {"small": round(small_build, 1), "big": round(big_build, 1)},
        "index_mib": {name: index_mib(root) for name, root in (("small", small), ("big", big))},
        "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2), "runs": runs,
        "python_s": round(statistics.median(python), 3),
        "commands": [{**asdict(fig), "small_median_s": round(fig.median(fig.small_s), 3),
                      "big_median_s": round(fig.median(fig.big_s), 3), "ratio": round(fig.ratio, 2),
                      "verdict": "-" if fig.command == FLOOR else "PASS"
                      if fig.ratio <= TARGET_RATIO and not fig.failures else "MISS"}
                     for fig in figures],
        "git_calls_of_one_run_once": {name: [{"git": g, "calls": n, "seconds": round(s, 3)}
                                             for g, n, s in found] for name, found in calls.items()},
    }


def print_report(report: Mapping[str, object]) -> None:
    files, build_s, index = report["files"], report["build_s"], report["index_mib"]
    assert isinstance(files, dict) and isinstance(build_s, dict) and isinstance(index, dict)
    print(f"bench_archive: {report['archived_jobs']:,} archived jobs ({report['events_per_archived_job']} "
          f"events each) + {report['live_jobs']} inbox jobs, beside the {report['live_jobs']} alone; "
          f"load {report['load_before']} -> {report['load_after']}")
    first = report["first_sync_s"]
    assert isinstance(first, dict)
    print(f"  archive on the {report['archive_on']}; built: big {files['big']:,} files in "
          f"{build_s['big']} s (git index {index['big']} MiB), small {files['small']:,} files in "
          f"{build_s['small']} s ({index['small']} MiB); first `aq ls --fetch` (checks the "
          f"archive out): big {first['big']} s, small {first['small']} s; "
          f"python -c pass {report['python_s']} s")
    print(f"\n  {'median of the runs':<30} {'100 jobs s':>10} {'archive s':>10} {'ratio':>7}  "
          f"target {TARGET_RATIO}x")
    commands = report["commands"]
    assert isinstance(commands, list)
    for fig in commands:
        print(f"  {fig['command']:<30} {fig['small_median_s']:>10.3f} {fig['big_median_s']:>10.3f} "
              f"{fig['ratio']:>6.2f}x  {fig['verdict']}")
        for failure in fig["failures"][:2]:
            print(f"      failed: {failure}")
    calls = report["git_calls_of_one_run_once"]
    assert isinstance(calls, dict)
    print("\n  git in one more `aq run --once` (subcommand: calls, seconds)")
    for name in ("small", "big"):
        shown = ", ".join(f"{c['git']} {c['calls']}x {c['seconds']:.3f}" for c in calls[name][:8])
        total = sum(c["seconds"] for c in calls[name])
        print(f"  {name:<6} {total:.3f} s: {shown}")


if __name__ == "__main__":
    main()
