"""How fast a fleet of `aq run` workers shares one queue through its git remote.

Three figures, each beside what it is measured against in the same run:
(a) one claim cycle (fetch, pick, move, commit, push) against a local bare remote, beside the raw
    git floor (`git mv` + `git commit` + `git push` by hand), and a whole `aq run --once`;
(b) fleet throughput: 6 workers over 3 clones draining 200 trivial jobs, through a local bare
    remote and through `git daemon` on 127.0.0.1;
(c) the time from a kill -9 of a worker holding a job to another worker's reclaim of it.
Every git call aq makes is timed at its one chokepoint (`aq.infra.gitops.git`), in this process and in
the workers it starts, so each figure comes with where the time went. It prints figures and
asserts nothing: see benchmarks/README.md.

    python benchmarks/bench_fleet.py            # the full run (about 5 min on 2 cores)
    python benchmarks/bench_fleet.py --quick    # a smoke run (about 1.5 min)
    python benchmarks/bench_fleet.py --json     # the same figures as JSON on stdout
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aq.infra.gitops
from aq.core.events import CLAIMED, FINISHED, parse_iso
from aq.store.queue import Queue
from aq.usecases.setup import init_queue
from aq.worker.runner import Worker

IDENTITY = ("-c", "user.name=bench", "-c", "user.email=bench@example.invalid",
            "-c", "commit.gpgsign=false")
# Targets from issue 3 ("Speed").
CLAIM_RATIO_TARGET = 1.5
THROUGHPUT_TARGETS = {"local": 7.0, "daemon": 4.0}
RECLAIM_SLACK_S = 2.0  # the reclaim target is lease_ttl + this
PROTOTYPE_JOBS_S = {"local": 3.45, "daemon": 2.1}  # heartbeats on main, for comparison
VICTIM_HOST = "aq-bench-victim"
LONG_JOB = "exec sleep 600"  # exec: the engine process itself sleeps, so it dies with its worker
LONG_JOB_ARGV = b"sleep\x00600\x00"


# --- running things ----------------------------------------------------------------------------

def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The parent's env without GIT_* (a hook's env must not leak in) and without AQ_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "AQ_"))}
    env.update(extra or {})
    return env


def git(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, env=child_env(), check=check, text=True,
                          stdin=subprocess.DEVNULL, capture_output=True)


def load_average() -> float | None:
    """The 1-minute load average: other work on the machine inflates every figure."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


# --- every git call aq makes, timed at aq.infra.gitops.git ---------------------------------------------

@dataclass(frozen=True, slots=True)
class GitCall:
    pid: int
    thread: str
    start: float  # wall clock, so calls of different processes line up
    seconds: float
    args: tuple[str, ...]
    rc: int  # -1: it raised (GitError)
    rejected: bool  # a push the remote refused because another machine moved first
    detail: str | None = None  # the last line git printed, for a call that failed

    @property
    def label(self) -> str:
        rest = list(self.args)
        while len(rest) >= 2 and rest[0] == "-c":
            rest = rest[2:]
        sub = rest[0] if rest else "?"
        if sub == "push":
            return "push --force (heartbeat)" if "--force" in rest else "push"
        return f"{sub} {rest[1]}" if sub in ("merge", "reset", "checkout", "clean") else sub

    @property
    def main_push(self) -> bool:
        return self.label == "push"


# Every `python -m aq` this script starts imports this at start-up (PYTHONPATH), so its git
# calls are timed the same way, one JSON line each, appended to AQ_BENCH_GIT_LOG (a kill -9 loses
# nothing). This process loads the same file for `record_call`: one definition for both.
SITECUSTOMIZE = '''\
"""Written by benchmarks/bench_fleet.py: time every git call aq makes, at aq.infra.gitops.git."""
import os
import threading
import time


def record_call(real, sink):
    """`real` (aq.infra.gitops.git), timed: each call goes to `sink` as a dict of GitCall's fields."""
    def timed_git(root, *args, check=True, input=None, timeout=None):
        start, t0 = time.time(), time.perf_counter()
        rc, out, err = -1, "", ""
        try:
            done = real(root, *args, check=check, input=input, timeout=timeout)
            rc, out, err = done.returncode, done.stdout, done.stderr
            return done
        finally:
            # a push's refusal is its porcelain "!" line, as aq.store.sync reads it; else git's last word
            refused = [line for line in out.splitlines() if line.startswith("!")]
            lines = refused or (err.strip() or out.strip()).splitlines() if rc != 0 else []
            sink({"pid": os.getpid(), "thread": threading.current_thread().name, "start": start,
                  "seconds": time.perf_counter() - t0, "args": list(args), "rc": rc,
                  "rejected": any("rejected" in line or "stale info" in line for line in refused),
                  "detail": lines[-1][:200] if lines else None})
    return timed_git


if os.environ.get("AQ_BENCH_GIT_LOG"):
    import json

    import aq.infra.gitops

    _fd = os.open(os.environ["AQ_BENCH_GIT_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    aq.infra.gitops.git = record_call(aq.infra.gitops.git,
                                lambda call: os.write(_fd, (json.dumps(call) + "\\n").encode()))
'''


class Hook:
    """A folder for PYTHONPATH that makes child `python -m aq` processes log their git calls."""

    def __init__(self, base: Path) -> None:
        self.dir = base / "hook"
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / "sitecustomize.py"
        path.write_text(SITECUSTOMIZE)
        spec = importlib.util.spec_from_file_location("bench_fleet_recorder", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # AQ_BENCH_GIT_LOG is not set here: it only defines
        self.record_call: Callable[..., Any] = module.record_call

    def env(self, log: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        path = os.pathsep.join(filter(None, (str(self.dir), os.environ.get("PYTHONPATH"))))
        return child_env({"PYTHONPATH": path, "AQ_BENCH_GIT_LOG": str(log), **(extra or {})})

    @contextlib.contextmanager
    def calls_here(self) -> Iterator[list[GitCall]]:
        """Record the git calls aq makes in this process while the block runs."""
        calls: list[GitCall] = []
        real = aq.infra.gitops.git
        aq.infra.gitops.git = self.record_call(
            real, lambda c: calls.append(GitCall(**{**c, "args": tuple(c["args"])})))
        try:
            yield calls
        finally:
            aq.infra.gitops.git = real


def read_git_log(path: Path) -> list[GitCall]:
    calls = []
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError, TypeError):
                data = json.loads(line)
                calls.append(GitCall(**{**data, "args": tuple(data["args"])}))
    return calls


@dataclass
class CallRow:
    label: str
    calls: int
    per_unit: float  # calls per cycle, per job or per process
    median_ms: float
    total_s: float


def call_table(calls: Sequence[GitCall], units: int) -> list[CallRow]:
    by_label: dict[str, list[float]] = defaultdict(list)
    for call in calls:
        by_label[call.label].append(call.seconds)
    rows = [CallRow(label, len(times), len(times) / max(units, 1),
                    statistics.median(times) * 1000, sum(times))
            for label, times in by_label.items()]
    return sorted(rows, key=lambda r: -r.total_s)


# --- building a fleet --------------------------------------------------------------------------

def job_text(title: str, body: str, capabilities: Sequence[str] = ()) -> str:
    lines = ["---", f"title: {json.dumps(title)}", "engine: shell"]
    if capabilities:
        lines.append(f"capabilities: [{', '.join(capabilities)}]")
    return "\n".join([*lines, "---", "", body, ""])


def make_remote(path: Path) -> Path:
    git(path.parent, "init", "-q", "--bare", "-b", "main", str(path))
    return path


def seed_queue(path: Path, remote: Path, jobs: Mapping[str, str],
               config: Mapping[str, str] | None = None) -> Path:
    """A queue made by aq's own init, shell engine by default, `jobs` (id -> file text) in the
    inbox, pushed to `remote` as its main branch."""
    git(path.parent, "init", "-q", "-b", "main", str(path))
    init_queue(path, here=True)  # the repository made just above, on branch main
    settings = {"default_engine": "shell", **(config or {})}
    text = (path / "aq.yaml").read_text()
    for key, value in settings.items():
        text, found = re.subn(rf"(?m)^{key}:.*$", f"{key}: {value}", text)
        if not found:
            text += f"{key}: {value}\n"
    (path / "aq.yaml").write_text(text)
    for job_id, body in jobs.items():
        (path / "queue" / "inbox" / f"{job_id}.md").write_text(body)
    git(path, "add", "-A")
    git(path, *IDENTITY, "commit", "-q", "--no-verify", "-m", f"bench: {len(jobs)} jobs")
    git(path, "remote", "add", "origin", str(remote))
    git(path, "push", "-q", "origin", "HEAD:main")
    return path


def clone(url: str | Path, path: Path) -> Path:
    git(path.parent, "clone", "-q", str(url), str(path))
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def git_daemon(base: Path) -> Iterator[str]:
    """`git daemon` serving every repo under `base` (push included) on a free port of 127.0.0.1."""
    port = free_port()
    errors = open(base / "daemon.log", "wb")  # noqa: SIM115 - closed below
    daemon = subprocess.Popen(
        ["git", "daemon", "--reuseaddr", f"--base-path={base}", "--export-all",
         "--enable=receive-pack", "--listen=127.0.0.1", f"--port={port}", str(base)],
        env=child_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors,
        start_new_session=True)  # its per-connection children share its group: one killpg ends all
    url = f"git://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 10
        while git(base, "ls-remote", url + "remote.git", check=False).returncode != 0:
            if time.monotonic() > deadline or daemon.poll() is not None:
                raise RuntimeError(f"git daemon did not answer on port {port}: see {base / 'daemon.log'}")
            time.sleep(0.05)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()
        errors.close()


def aq_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "aq", *args]


def events_at(repo: Path, job_id: str) -> list[dict[str, Any]]:
    path = repo / "queue" / ".events" / f"{job_id}.jsonl"
    with contextlib.suppress(FileNotFoundError):
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return []


# --- (a) one claim cycle -----------------------------------------------------------------------

@dataclass
class ClaimFigures:
    runs: int
    seconds: dict[str, list[float]] = field(default_factory=dict)  # variant -> timed runs
    median_ms: dict[str, float | None] = field(default_factory=dict)
    ratio_to_floor: dict[str, float | None] = field(default_factory=dict)
    calls: dict[str, list[CallRow]] = field(default_factory=dict)  # aq variant -> its git calls
    python_ms: dict[str, float | None] = field(default_factory=dict)  # cycle minus its git calls
    process: dict[str, float | None] = field(default_factory=dict)  # `aq run --once` breakdown, ms
    process_calls: list[CallRow] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


FLOOR = "floor: mv+commit+push"
FLOOR_FETCH = "floor: fetch+mv+commit+push"
FLOOR_MOVED = "floor, remote moved: fetch+merge+mv+commit+push"
AQ_QUIET = "aq claim, remote unchanged"
AQ_MOVED = "aq claim, remote moved"
AQ_ONCE = "`aq run --once` minus engine"
LIKE_FLOOR = {AQ_QUIET: FLOOR_FETCH, AQ_MOVED: FLOOR_MOVED}


def floor_claim(repo: Path, sync: bool, tag: str) -> float:
    """The least git can do to claim: the first inbox job renamed, committed and pushed."""
    start = time.perf_counter()
    if sync:
        git(repo, "fetch", "-q", "origin")
        git(repo, "merge", "-q", "--ff-only", "origin/main")
    job = min(p.name for p in (repo / "queue" / "inbox").glob("*.md"))
    git(repo, "mv", f"queue/inbox/{job}", f"queue/building/{job}")
    git(repo, *IDENTITY, "commit", "-q", "--no-verify", "-m", f"claim {job} ({tag})")
    git(repo, "push", "-q", "origin", "HEAD:main")
    return time.perf_counter() - start


def floor_fetch_claim(repo: Path) -> float:
    start = time.perf_counter()
    git(repo, "fetch", "-q", "origin")
    return time.perf_counter() - start + floor_claim(repo, False, "after fetch")


def other_machine_claims(repo: Path) -> None:
    """A second clone claims by hand, so the next claim elsewhere finds the remote moved."""
    git(repo, "fetch", "-q", "origin")
    git(repo, "reset", "-q", "--hard", "origin/main")
    floor_claim(repo, False, "other machine")


def aq_claim(worker: Worker, calls: list[GitCall]) -> tuple[float, list[GitCall], bool]:
    """One in-process claim cycle as `aq run` makes it: `Claimer.transact_claim`, which holds the
    clone's lock, fetches and aligns, takes back expired leases, picks, moves, commits, pushes."""
    first = len(calls)
    start = time.perf_counter()
    claim = worker.claims.transact_claim()
    return time.perf_counter() - start, calls[first:], claim is not None


def once_process(repo: Path, hook: Hook, log: Path) -> tuple[dict[str, float], str | None]:
    """A whole `aq run --once` on a trivial job: wall, engine (the attempt's duration), start-up
    (spawn to first git call), and git time on the main and heartbeat threads, in seconds."""
    spawned = time.time()
    start = time.perf_counter()
    done = subprocess.run(aq_argv("run", "--once", "--worker", "bench-once"), cwd=repo,
                          env=hook.env(log), capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    found = re.search(r"claimed (\S+) \(attempt (\d+)\)", done.stdout)
    if done.returncode != 0 or not found:
        tail = (done.stderr.strip() or done.stdout.strip()).splitlines()
        return {}, f"aq run --once exited {done.returncode}: {tail[-1] if tail else 'no output'}"
    finished = [e for e in events_at(repo, found[1]) if e.get("type") == FINISHED]
    engine = float(finished[-1].get("duration") or 0.0) if finished else 0.0
    mine = [c for c in read_git_log(log) if c.start >= spawned]
    main_git = sum(c.seconds for c in mine if c.thread == "MainThread")
    beat_git = sum(c.seconds for c in mine if c.thread == "heartbeat")
    first_call = min((c.start for c in mine), default=spawned)
    return {"wall": wall, "engine": engine, "startup": first_call - spawned, "git_main": main_git,
            "git_heartbeat": beat_git, "calls": float(len(mine))}, None


def claim_cycle(base: Path, runs: int, hook: Hook) -> ClaimFigures:
    jobs = {f"job-{i:04d}": job_text(f"Trivial job {i}", "true") for i in range(5 * (runs + 1) + 4)}
    floor_remote = make_remote(base / "floor.git")
    seed_queue(base / "floor-seed", floor_remote, jobs)
    floor1, floor2 = clone(floor_remote, base / "floor-1"), clone(floor_remote, base / "floor-2")
    aq_remote = make_remote(base / "aq.git")
    seed_queue(base / "aq-seed", aq_remote, jobs)
    quiet = Worker(Queue(clone(aq_remote, base / "aq-1")), worker_id="bench-1", mode="once",
                   say=lambda _line: None)
    other = Worker(Queue(clone(aq_remote, base / "aq-2")), worker_id="bench-2", mode="once",
                   say=lambda _line: None)
    once_remote = make_remote(base / "once.git")
    seed_queue(base / "once-seed", once_remote, jobs)
    once_repo = clone(once_remote, base / "once-1")
    once_log = base / "once-git.jsonl"

    fig = ClaimFigures(runs)
    variants = (FLOOR, FLOOR_FETCH, FLOOR_MOVED, AQ_QUIET, AQ_MOVED)
    fig.seconds = {v: [] for v in (*variants, AQ_ONCE)}
    cycle_calls: dict[str, list[list[GitCall]]] = {AQ_QUIET: [], AQ_MOVED: []}
    once_runs: list[dict[str, float]] = []
    with hook.calls_here() as calls:
        for round_no in range(runs + 1):  # round 0 warms up (imports, caches, Remote.detect)
            took: dict[str, float] = {}
            took[FLOOR] = floor_claim(floor1, False, "floor")
            took[AQ_QUIET], made, ok_quiet = aq_claim(quiet, calls)
            took[FLOOR_FETCH] = floor_fetch_claim(floor1)
            other_machine_claims(floor2)
            other.claims.transact_claim()
            took[FLOOR_MOVED] = floor_claim(floor1, True, "remote moved")
            took[AQ_MOVED], made_moved, ok_moved = aq_claim(quiet, calls)
            once, error = once_process(once_repo, hook, once_log)
            if not (ok_quiet and ok_moved):
                fig.errors.append(f"round {round_no}: an aq claim cycle claimed nothing")
            if error:
                fig.errors.append(f"round {round_no}: {error}")
            if round_no == 0:
                continue
            for variant, seconds in took.items():
                fig.seconds[variant].append(seconds)
            cycle_calls[AQ_QUIET].append(made)
            cycle_calls[AQ_MOVED].append(made_moved)
            if once:
                once_runs.append(once)
                fig.seconds[AQ_ONCE].append(once["wall"] - once["engine"])
    summarize_claims(fig, cycle_calls, once_runs, once_log)
    return fig


def summarize_claims(fig: ClaimFigures, cycle_calls: Mapping[str, list[list[GitCall]]],
                     once_runs: list[dict[str, float]], once_log: Path) -> None:
    fig.median_ms = {v: (statistics.median(s) * 1000 if s else None) for v, s in fig.seconds.items()}
    floor = fig.median_ms[FLOOR]
    fig.ratio_to_floor = {v: (m / floor if m is not None and floor else None)
                          for v, m in fig.median_ms.items()}
    for variant, cycles in cycle_calls.items():
        fig.calls[variant] = call_table([c for cycle in cycles for c in cycle], len(cycles))
        rest = [total - sum(c.seconds for c in cycle)
                for total, cycle in zip(fig.seconds[variant], cycles, strict=True)]
        fig.python_ms[variant] = statistics.median(rest) * 1000 if rest else None
    if once_runs:
        fig.process = {key: statistics.median(r[key] for r in once_runs) * (1 if key == "calls" else 1000)
                       for key in once_runs[0]}
        fig.process_calls = call_table(read_git_log(once_log), len(once_runs) + 1)  # + warm-up


# --- (b) fleet throughput ----------------------------------------------------------------------

@dataclass
class WorkerRow:
    name: str
    clone: int
    claims: int = 0  # claimed events on the remote
    fetches: int = 0  # each transaction (and each retry of one) starts with a fetch
    pushes_ok: int = 0
    pushes_rejected: int = 0
    git_s: float = 0.0  # main thread only
    ran_s: float | None = None  # start to exit: a drain worker may quit before the queue is empty


@dataclass
class FleetFigures:
    transport: str
    jobs: int
    workers: int
    clones: int
    poll_s: float
    wall_s: float = 0.0
    first_claim_to_last_finish_s: float | None = None
    jobs_per_s: float | None = None
    target_jobs_per_s: float | None = None
    verdict: str = "-"
    finished_jobs: int = 0
    stages: dict[str, int] = field(default_factory=dict)
    claims: int = 0  # claimed events: more than jobs means some ran twice
    commits_on_main: int = 0
    pushes_ok: int = 0
    pushes_rejected: int = 0  # lost races: each one a retry of the whole transaction
    rejected_why: dict[str, int] = field(default_factory=dict)
    pushes_other_failures: int = 0
    heartbeat_pushes: int = 0
    # fetch start to the end of the push that landed, per landed push: the remote's critical
    # section, since any push inside it makes this one lose
    window_ms: float | None = None
    ceiling_jobs_per_s: float | None = None  # 1 / (window x landed pushes per job)
    per_worker: list[WorkerRow] = field(default_factory=list)
    calls: list[CallRow] = field(default_factory=list)  # per finished job
    worker_errors: list[str] = field(default_factory=list)
    timed_out: bool = False


def fleet(base: Path, transport: str, jobs: int, workers: int, clones: int, poll: float,
          hook: Hook, timeout: float) -> FleetFigures:
    remote = make_remote(base / "remote.git")
    bodies = {f"job-{i:04d}": job_text(f"Trivial job {i}", "true") for i in range(jobs)}
    seed_queue(base / "seed", remote, bodies)
    fig = FleetFigures(transport, jobs, workers, clones, poll,
                       target_jobs_per_s=THROUGHPUT_TARGETS[transport])
    fig.per_worker = [WorkerRow(f"w{i}", i % clones) for i in range(workers)]
    with contextlib.ExitStack() as stack:
        url = str(remote) if transport == "local" else stack.enter_context(git_daemon(base)) + "remote.git"
        repos = [clone(url, base / f"clone-{i}") for i in range(clones)]
        log = base / "git-calls.jsonl"
        started = time.time()
        fig.wall_s, fig.timed_out, outputs = run_workers(fig.per_worker, repos, poll, hook.env(log),
                                                         base, timeout)
    check = clone(remote, base / "check")
    fleet_outcome(fig, check, git(base, "--git-dir", str(remote), "rev-list", "--count", "main"))
    fleet_calls(fig, [c for c in read_git_log(log) if c.start >= started])
    for name, text in outputs.items():
        fig.worker_errors += [f"{name}: {line}" for line in text.splitlines()
                              if "could not" in line or "Traceback" in line or line.startswith("aq:")]
    return fig


def run_workers(workers: Sequence[WorkerRow], repos: Sequence[Path], poll: float,
                env: Mapping[str, str], base: Path, timeout: float
                ) -> tuple[float, bool, dict[str, str]]:
    """Start one `aq run --drain` process per worker in its clone; wait for all to exit."""
    procs: dict[str, subprocess.Popen[bytes]] = {}
    start = time.perf_counter()
    for worker in workers:
        with open(base / f"{worker.name}.out", "wb") as out:  # the child keeps its own copy
            procs[worker.name] = subprocess.Popen(
                aq_argv("run", "--drain", "--worker", worker.name, "--poll", f"{poll:g}"),
                cwd=repos[worker.clone], env=dict(env), stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT)
    rows = {worker.name: worker for worker in workers}
    while any(proc.poll() is None for proc in procs.values()):
        if time.perf_counter() - start > timeout:
            break
        time.sleep(0.05)
        for name, proc in procs.items():
            if proc.poll() is not None and rows[name].ran_s is None:
                rows[name].ran_s = time.perf_counter() - start
    wall = time.perf_counter() - start
    timed_out = any(proc.poll() is None for proc in procs.values())
    if timed_out:
        stop_all(list(procs.values()))
    return wall, timed_out, {name: (base / f"{name}.out").read_text(errors="replace") for name in procs}


def stop_all(procs: Sequence[subprocess.Popen[Any]]) -> None:
    """TERM (a worker finishes what it holds), then KILL what is left after 10 s."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + 10
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def fleet_outcome(fig: FleetFigures, check: Path, count: subprocess.CompletedProcess[str]) -> None:
    """Where every job ended, and the first claim and last finish, from the remote's own record."""
    for stage_dir in sorted((check / "queue").iterdir()):
        jobs_here = len(list(stage_dir.glob("*.md"))) if stage_dir.is_dir() else 0
        if jobs_here and not stage_dir.name.startswith("."):
            fig.stages[stage_dir.name] = jobs_here
            fig.finished_jobs += jobs_here if stage_dir.name not in ("inbox", "building") else 0
    claims: list[float] = []
    finishes: list[float] = []
    rows = {row.name: row for row in fig.per_worker}
    for path in (check / "queue" / ".events").glob("*.jsonl"):
        for event in events_at(check, path.stem):
            moment = parse_iso(str(event.get("ts"))).timestamp()
            if event.get("type") == CLAIMED:
                claims.append(moment)
                if str(event.get("by")) in rows:
                    rows[str(event.get("by"))].claims += 1
            elif event.get("type") == FINISHED:
                finishes.append(moment)
    fig.claims = len(claims)
    fig.commits_on_main = int(count.stdout.strip() or 0) - 2  # aq init + the seed's jobs
    if claims and finishes and max(finishes) > min(claims):
        fig.first_claim_to_last_finish_s = max(finishes) - min(claims)
        fig.jobs_per_s = fig.finished_jobs / fig.first_claim_to_last_finish_s
    if fig.jobs_per_s is not None and fig.target_jobs_per_s is not None:
        fig.verdict = "PASS" if fig.jobs_per_s >= fig.target_jobs_per_s and not fig.timed_out else "MISS"


def worker_of(calls: Sequence[GitCall]) -> dict[int, str]:
    """pid -> worker name, read from the heartbeats committed: a machine's beat names each of
    its workers with its pid (a beat of aq before machine beats, its one worker)."""
    names = {}
    for call in calls:
        if call.label == "commit-tree" and "-m" in call.args:
            with contextlib.suppress(ValueError, IndexError, AttributeError, KeyError):
                payload = json.loads(call.args[call.args.index("-m") + 1])
                for name, entry in (payload.get("workers") or {}).items():
                    names[int(entry["pid"])] = name
                if "worker" in payload:
                    names[call.pid] = payload["worker"]
    return names


def count_pushes(fig: FleetFigures, calls: Sequence[GitCall]) -> None:
    """Pushes to main (landed, lost races, other failures), heartbeat pushes and git calls per
    job, from the workers' git calls."""
    pushes = [c for c in calls if c.main_push]
    fig.pushes_ok = sum(1 for c in pushes if c.rc == 0)
    fig.pushes_rejected = sum(1 for c in pushes if c.rc != 0 and c.rejected)
    fig.rejected_why = dict(Counter((c.detail or "?").split("\t")[-1] for c in pushes
                                    if c.rc != 0 and c.rejected))
    fig.pushes_other_failures = sum(1 for c in pushes if c.rc != 0 and not c.rejected)
    fig.heartbeat_pushes = sum(1 for c in calls if c.label == "push --force (heartbeat)")
    fig.calls = call_table(calls, fig.finished_jobs)


def fleet_calls(fig: FleetFigures, calls: Sequence[GitCall]) -> None:
    """count_pushes, and each worker's fetches, pushes and git time, and the claim window."""
    count_pushes(fig, calls)
    rows = {row.name: row for row in fig.per_worker}
    names = worker_of(calls)
    windows: list[float] = []
    fetched_at: dict[int, float] = {}
    for call in sorted(calls, key=lambda c: c.start):
        row = rows.get(names.get(call.pid, ""))
        if call.thread != "MainThread" or row is None:
            continue
        row.git_s += call.seconds
        if call.label == "fetch":
            row.fetches += 1
            fetched_at[call.pid] = call.start
        elif call.main_push and call.rc == 0:
            row.pushes_ok += 1
            if call.pid in fetched_at:
                windows.append(call.start + call.seconds - fetched_at[call.pid])
        elif call.main_push and call.rejected:
            row.pushes_rejected += 1
    if windows and fig.finished_jobs:
        window = statistics.median(windows)
        fig.window_ms = window * 1000
        fig.ceiling_jobs_per_s = 1 / (window * fig.pushes_ok / fig.finished_jobs)


# --- (c) kill -9 to reclaim --------------------------------------------------------------------

@dataclass
class ReclaimTrial:
    host: str  # "other": the victim looks like another machine (lease expiry); "same": dead pid
    job: str | None = None
    seconds_to_remote: float | None = None  # kill -9 to the reclaim's commit on the remote
    seconds_to_line: float | None = None  # kill -9 to the rescuer printing the reclaim
    error: str | None = None


@dataclass
class ReclaimFigures:
    lease_ttl_s: float
    heartbeat_s: float
    rescuer_poll_s: float
    hold_s: float
    other_host: str  # how the victim was made to look like another machine, or why it could not
    trials: list[ReclaimTrial] = field(default_factory=list)
    p50_s: dict[str, float | None] = field(default_factory=dict)
    max_s: dict[str, float | None] = field(default_factory=dict)
    target_s: float = 0.0
    verdict: str = "-"


class Lines:
    """A child's stdout, each line with the monotonic moment it arrived."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._pump, args=(proc,), daemon=True)
        self._thread.start()

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self._lock:
                self.lines.append((time.monotonic(), line.rstrip("\n")))

    def wait_for(self, pattern: str, after: float, timeout: float) -> tuple[float, re.Match[str]] | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for moment, line in self.lines:
                    found = re.search(pattern, line)
                    if moment >= after and found:
                        return moment, found
            time.sleep(0.01)
        return None


def other_host_prefix() -> tuple[list[str], str]:
    """A command prefix that runs the victim under another host name (a UTS namespace)."""
    script = f'hostname {VICTIM_HOST} && exec "$@"'
    for prefix in (["unshare", "-u"], ["unshare", "-r", "-u"]):
        argv = [*prefix, "sh", "-c", script, "sh"]
        with contextlib.suppress(OSError):
            probe = subprocess.run([*argv, "hostname"], capture_output=True, text=True, check=False)
            if probe.returncode == 0 and probe.stdout.strip() == VICTIM_HOST:
                return argv, " ".join(prefix)
    return [], "none (no unshare -u here): only the same-host path was measured"


def reclaims_on_remote(remote: Path, job_id: str) -> int:
    """How many times the remote's main branch records the job's lease as expired."""
    done = git(remote, "cat-file", "-p", f"main:queue/.events/{job_id}.jsonl", check=False)
    return done.stdout.count('"outcome":"lease_expired"')


def reclaim_trial(base: Path, index: int, host: str, prefix: list[str], remote: Path,
                  rescuer: Lines, lease: list[str], hold: float) -> ReclaimTrial:
    """A fresh victim claims the long job; `hold` s later it gets kill -9; the clock runs until
    the remote records the job's lease as expired."""
    trial = ReclaimTrial(host)
    repo = clone(remote, base / f"victim-{index}")
    name = f"victim-{index}"
    victim = subprocess.Popen(
        [*(prefix if host == "other" else []),
         *aq_argv("run", "--worker", name, "--cap", "victim", "--poll", "0.1", *lease)],
        cwd=repo, env=child_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    try:
        lines = Lines(victim)
        claimed = lines.wait_for(rf"{name}: claimed (\S+)", 0.0, 30)
        if claimed is None:
            trial.error = f"{name} claimed nothing in 30 s"
            return trial
        trial.job = claimed[1][1]
        before = reclaims_on_remote(remote, trial.job)
        time.sleep(hold)  # a steady state: the rescuer has seen the lease renewed a few times
        killed = time.monotonic()
        victim.kill()
        victim.wait()
        while time.monotonic() - killed < 30:
            if reclaims_on_remote(remote, trial.job) > before:
                trial.seconds_to_remote = time.monotonic() - killed
                break
            time.sleep(0.02)
        else:
            trial.error = "no reclaim on the remote within 30 s"
        said = rescuer.wait_for(rf"rescuer: {re.escape(trial.job)}: .* -> ", killed, 2)
        trial.seconds_to_line = said[0] - killed if said else None
        return trial
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
        kill_leftover_engine(repo)


def kill_leftover_engine(repo: Path) -> None:
    """The victim's engine (`exec sleep 600`) dies with it (PR_SET_PDEATHSIG); should one outlive
    it, end it by the group the victim recorded, checking that it is our `sleep 600` first."""
    for pgid_file in (repo / ".git" / "aq").glob("**/running/*/*.pgid"):
        with contextlib.suppress(OSError, ValueError):
            pgid = int(pgid_file.read_text())
            for stat in Path("/proc").glob("[0-9]*/stat"):
                with contextlib.suppress(OSError, ValueError, IndexError):
                    fields = stat.read_text().rsplit(")", 1)[1].split()
                    cmdline = (stat.parent / "cmdline").read_bytes()
                    if int(fields[2]) == pgid and cmdline == LONG_JOB_ARGV:
                        os.kill(int(stat.parent.name), signal.SIGKILL)


def reclaim(base: Path, trials: int, same_host_trials: int, ttl: float, beat: float,
            poll: float, hold: float) -> ReclaimFigures:
    prefix, how = other_host_prefix()
    fig = ReclaimFigures(ttl, beat, poll, hold, how, target_s=ttl + RECLAIM_SLACK_S)
    lease = ["--lease-ttl", f"{ttl:g}s", "--heartbeat", f"{beat:g}s"]
    remote = make_remote(base / "remote.git")
    # One long job that only a victim may take: the rescuer takes back its lease but never runs
    # it, so it waits in the inbox for the next trial's victim (max_reclaims: never dead_letter).
    long_job = job_text("Long job", LONG_JOB, ["victim"])
    seed_queue(base / "seed", remote, {"long-job": long_job},
               {"lease_ttl": f"{ttl:g}s", "heartbeat_interval": f"{beat:g}s", "max_reclaims": "1000"})
    rescuer_repo = clone(remote, base / "rescuer")
    rescuer = subprocess.Popen(aq_argv("run", "--worker", "rescuer", "--poll", f"{poll:g}", *lease),
                               cwd=rescuer_repo, env=child_env(), stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        said = Lines(rescuer)
        plan = ["other"] * (trials if prefix else 0) + ["same"] * same_host_trials
        for index, host in enumerate(plan):
            fig.trials.append(reclaim_trial(base, index, host, prefix, remote, said, lease, hold))
    finally:
        stop_all([rescuer])
    for host in ("other", "same"):
        took = [t.seconds_to_remote for t in fig.trials if t.host == host and t.seconds_to_remote is not None]
        fig.p50_s[host] = median(took)
        fig.max_s[host] = max(took) if took else None
    worst = fig.max_s.get("other")
    if worst is not None:
        fig.verdict = "PASS" if worst <= fig.target_s else "MISS"
    return fig


# --- reporting ---------------------------------------------------------------------------------

def table(head: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    body = [list(head), *[list(r) for r in rows]]
    widths = [max(len(row[i]) for row in body) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) if i < left else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
             for row in body]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def calls_block(rows: Sequence[CallRow], unit: str) -> str:
    return table(("git call", f"per {unit}", "median ms", "total s"),
                 [(r.label, f"{r.per_unit:.2f}", f"{r.median_ms:.1f}", f"{r.total_s:.2f}") for r in rows])


def render_claims(fig: ClaimFigures) -> str:
    rows = []
    for variant, runs in fig.seconds.items():
        ratio = fig.ratio_to_floor.get(variant)
        like = LIKE_FLOOR.get(variant)
        like_ratio = (fig.median_ms[variant] or 0) / fig.median_ms[like] if like and fig.median_ms.get(like) else None
        verdict = ""
        if variant == AQ_QUIET and ratio is not None:
            verdict = "PASS" if ratio <= CLAIM_RATIO_TARGET else "MISS"
        rows.append((variant, ms(median(runs)), ms(min(runs) if runs else None),
                     f"{ratio:.2f}" if ratio is not None else "-",
                     f"{like_ratio:.2f}" if like_ratio is not None else "",
                     f"<= {CLAIM_RATIO_TARGET:g}" if variant == AQ_QUIET else "", verdict))
    out = [f"(a) one claim cycle against a local bare remote, median of {fig.runs} interleaved runs",
           table(("cycle", "median ms", "min ms", "x floor", "x like floor", "target", ""), rows),
           "x like floor: beside the floor that does the same git work (fetch, and a fast-forward "
           "when the remote moved); `aq run --once` is a whole process (start-up, claim, finish, "
           "heartbeats) minus its engine time."]
    for variant, calls in fig.calls.items():
        rest = fig.python_ms.get(variant)
        out += [f"\n{variant}: git calls per cycle (python outside git: "
                f"{rest or 0:.0f} ms per cycle)", calls_block(calls, "cycle")]
    if fig.process:
        p = fig.process
        out.append(f"\n`aq run --once` on a `true` job, medians in ms: whole process {p['wall']:.0f}, "
                   f"engine {p['engine']:.0f}, start-up to first git call {p['startup']:.0f}, git on the "
                   f"main thread {p['git_main']:.0f}, git on the heartbeat thread {p['git_heartbeat']:.0f} "
                   f"(overlaps), {p['calls']:.0f} git calls")
        out.append(calls_block(fig.process_calls, "process"))
    out += [f"error: {e}" for e in fig.errors[:5]]
    return "\n".join(out)


def render_fleet(figs: Sequence[FleetFigures]) -> str:
    rows = []
    for f in figs:
        rows.append((f.transport, f"{f.finished_jobs}/{f.jobs}", f"{f.wall_s:.1f}",
                     f"{f.first_claim_to_last_finish_s:.1f}" if f.first_claim_to_last_finish_s else "-",
                     f"{f.jobs_per_s:.2f}" if f.jobs_per_s else "-", f">= {f.target_jobs_per_s:g}",
                     f.verdict + (" (timed out)" if f.timed_out else ""),
                     f"{PROTOTYPE_JOBS_S[f.transport]:g}", str(f.claims), str(f.pushes_ok),
                     str(f.pushes_rejected), str(f.pushes_other_failures), str(f.heartbeat_pushes),
                     ms((f.window_ms or 0) / 1000) if f.window_ms else "-",
                     f"{f.ceiling_jobs_per_s:.1f}" if f.ceiling_jobs_per_s else "-"))
    head = ("remote", "jobs done", "wall s", "claim..finish s", "jobs/s", "target", "",
            "prototype", "claims", "pushes ok", "rejected", "other fail", "heartbeats",
            "window ms", "ceiling jobs/s")
    first = figs[0]
    out = [f"(b) fleet throughput: {first.workers} workers (`aq run --drain --poll {first.poll_s:g}`) "
           f"over {first.clones} clones, {first.jobs} jobs of `true`", table(head, rows),
           "window = median time from a transaction's fetch to the end of its push that landed "
           "(no other push may land inside it); ceiling = 1 / (window x landed pushes per job)."]
    for f in figs:
        out += [f"\n{f.transport}: stages {f.stages}; commits on main {f.commits_on_main}; "
                f"rejections {f.rejected_why or 'none'}",
                table(("worker", "clone", "claims", "fetches", "pushes ok", "rejected", "git s", "ran s"),
                      [(w.name, str(w.clone), str(w.claims), str(w.fetches), str(w.pushes_ok),
                        str(w.pushes_rejected), f"{w.git_s:.1f}",
                        f"{w.ran_s:.1f}" if w.ran_s is not None else "-") for w in f.per_worker]),
                calls_block(f.calls, "job")]
        out += [f"worker said: {e}" for e in f.worker_errors[:5]]
    return "\n".join(out)


def render_reclaim(fig: ReclaimFigures) -> str:
    rows = [(t.host, t.job or "-", f"{t.seconds_to_remote:.2f}" if t.seconds_to_remote is not None else "-",
             f"{t.seconds_to_line:.2f}" if t.seconds_to_line is not None else "-", t.error or "")
            for t in fig.trials]
    summary = [f"{host} host: p50 {fig.p50_s[host]:.2f} s, max {fig.max_s[host]:.2f} s"
               for host in ("other", "same") if fig.p50_s.get(host) is not None]
    return "\n".join([
        f"(c) kill -9 of a worker holding a job -> reclaim by another clone's worker (lease_ttl "
        f"{fig.lease_ttl_s:g}s, heartbeat {fig.heartbeat_s:g}s, rescuer --poll {fig.rescuer_poll_s:g}s, "
        f"killed {fig.hold_s:g}s after its claim; other host via {fig.other_host})",
        table(("victim on", "job", "to remote s", "to rescuer line s", ""), rows),
        "; ".join(summary) + f"; target (other host, max) <= {fig.target_s:g} s: {fig.verdict}",
    ])


def machine() -> dict[str, object]:
    return {"python": platform.python_version(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "git": git(Path.cwd(), "--version").stdout.strip()}


# --- main --------------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs, jobs and trials: a smoke run")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    parser.add_argument("--runs", type=int, default=None, help="claim cycles per variant (default 20; 4 with --quick)")
    parser.add_argument("--jobs", type=int, default=None, help="jobs per fleet run (default 200; 40 with --quick)")
    parser.add_argument("--trials", type=int, default=None, help="kill -9 trials (default 5; 2 with --quick)")
    parser.add_argument("--only", default="abc", help="sections to run, e.g. 'b' or 'ac' (default abc)")
    args = parser.parse_args(argv)
    runs = max(1, args.runs or (4 if args.quick else 20))
    jobs = max(1, args.jobs or (40 if args.quick else 200))
    trials = max(1, args.trials or (2 if args.quick else 5))
    report: dict[str, Any] = {"machine": machine(), "load_average_1m": {"start": load_average()}}
    blocks: list[str] = []

    def progress(text: str) -> None:
        print(f"{text} (load {load_average()})", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="aq-bench-fleet-") as tmp:
        base = Path(tmp)
        hook = Hook(base)
        if "a" in args.only:
            progress(f"(a) claim cycles: {runs} rounds ...")
            (base / "a").mkdir()
            claims = claim_cycle(base / "a", runs, hook)
            report["claim_cycle"] = asdict(claims)
            report["load_average_1m"]["after_a"] = load_average()
            blocks.append(render_claims(claims))
        if "b" in args.only:
            figs = []
            for transport in ("local", "daemon"):
                progress(f"(b) fleet over {transport}: {jobs} jobs ...")
                (base / f"b-{transport}").mkdir()
                figs.append(fleet(base / f"b-{transport}", transport, jobs, 6, 3, 0.05, hook,
                                  timeout=110.0 if not args.quick else 60.0))
                report["load_average_1m"][f"after_b_{transport}"] = load_average()
            report["fleet"] = [asdict(f) for f in figs]
            blocks.append(render_fleet(figs))
        if "c" in args.only:
            progress(f"(c) kill -9 to reclaim: {trials} trials ...")
            (base / "c").mkdir()
            fig = reclaim(base / "c", trials, max(1, trials // 2), ttl=3.0, beat=0.5, poll=0.5, hold=2.0)
            report["reclaim"] = asdict(fig)
            report["load_average_1m"]["after_c"] = load_average()
            blocks.append(render_reclaim(fig))
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        info, load = report["machine"], report["load_average_1m"]
        print(f"python {info['python']}, {info['git']} on {info['platform']}, {info['cpus']} CPUs; "
              f"1-min load average: " + ", ".join(f"{k} {v}" for k, v in load.items()) + "\n")
        print("\n\n".join(blocks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
