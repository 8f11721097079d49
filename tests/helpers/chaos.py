"""A fleet on one machine for fault-injection tests: a bare remote, clones, `aq run` workers as
real processes, the faults (kill -9, the remote's git killed, a git daemon outage, a skewed wall
clock) and the audit every run must pass at the end.

Nothing here is mocked: git is real, workers are `python -m aq run` processes, faults are real
signals. Timings only pace the faults and bound the waits; no check depends on how long
anything took.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.helpers.cli import aq_env, run_aq
from tests.helpers.git import git
from tests.helpers.queue import STAGES, configure

FINAL = frozenset({"review", "testing", "shipped", "failed", "dead_letter"})
EXPLAINS_RERUN = "lease expiry (outcome lease_expired / interrupted, action reclaim) or retry"
# The remote's side of a fetch or push: `git-upload-pack '/path'`, `git receive-pack`, and
# the `sh -c` that a local transport wraps them in.
PACK_SERVER = re.compile(r"git[- ](receive|upload)-pack")


def job_body(ledger: Path, pause: float = 0.0, first_only: bool = False, then: str = "") -> str:
    """A shell-engine job that notes each execution (job, attempt, worker) in a ledger outside
    the repo, then sleeps `pause` seconds (on its first attempt only, with `first_only`), then
    runs `then`. One `echo >>` is one write, so lines from concurrent jobs never interleave."""
    lines = [f'echo "$AQ_JOB_ID $AQ_ATTEMPT $AQ_WORKER_ID" >> {ledger}']
    if pause:
        guard = '[ "$AQ_ATTEMPT" = 1 ] && ' if first_only else ""
        lines.append(f"{guard}sleep {pause}")
    lines += [then, "true"] if then else (["true"] if pause else [])
    return "\n".join(lines) + "\n"


def job_file(ledger: Path, pause: float = 0.0, first_only: bool = False, then: str = "") -> str:
    return f'---\nverify: "true"\n---\n{job_body(ledger, pause, first_only, then)}'


@dataclass
class Worker:
    name: str
    clone: Path
    proc: subprocess.Popen[bytes]
    log: Path
    killed: bool = False  # by the test (kill -9), so its exit code says nothing

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class Fleet:
    """A bare remote, a seed clone that made the queue, worker clones and worker processes.

    Every worker runs in its own process group (with its git children); `close()` kills every
    group it started and reaps them, whatever the test did.
    """

    def __init__(self, root: Path, ttl: str = "3s", heartbeat: str = "0.5s", poll: str = "0.1") -> None:
        self.root = root
        self.remote = (root / "remote.git").resolve()
        self.url = str(self.remote)
        self.ledger = root / "ledger"
        self.logs = root / "logs"
        self.ttl, self.heartbeat, self.poll = ttl, heartbeat, poll
        self.workers: list[Worker] = []
        self.daemon: GitDaemon | None = None
        self.logs.mkdir(parents=True, exist_ok=True)
        self.ledger.touch()
        git(root, "init", "-q", "--bare", "-b", "main", str(self.remote))

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the queue -------------------------------------------------------------------------

    def seed(self, jobs: Iterable[str] = (), pause: float = 0.0, first_only: bool = False,
             then: str = "", **config: Any) -> Path:
        """`aq init` a seed clone (shell engine), add `jobs` as files in its inbox, push to main."""
        seed = self.root / "seed"
        done = run_aq("init", str(seed), cwd=self.root)
        assert done.returncode == 0, done.stderr
        configure(seed, default_engine="shell", kill_grace="2s", **config)
        for job_id in jobs:
            (seed / "queue" / "inbox" / f"{job_id}.md").write_text(
                job_file(self.ledger, pause, first_only, then))
        git(seed, "add", "-A")
        git(seed, "commit", "-q", "-m", "seed the queue")
        git(seed, "remote", "add", "origin", self.url)
        git(seed, "push", "-q", "origin", "HEAD:main")
        return seed

    def clone(self, name: str) -> Path:
        path = self.root / name
        git(self.root, "clone", "-q", self.url, str(path))
        return path

    def drop(self, seed: Path, ids: Iterable[str], pause: float = 0.0, body: str | None = None) -> None:
        """Add jobs the way a person does: files in the seed's inbox, a commit, a push (fetch
        and rebase while the workers' pushes win; a person's commit only adds files)."""
        git(seed, "fetch", "-q", "origin")
        git(seed, "reset", "-q", "--hard", "origin/main")
        for job_id in ids:
            text = job_file(self.ledger, pause) if body is None else f'---\nverify: "true"\n---\n{body}'
            (seed / "queue" / "inbox" / f"{job_id}.md").write_text(text)
        git(seed, "add", "queue/inbox")
        git(seed, "commit", "-q", "-m", "add jobs by hand")
        for _ in range(50):
            pushed = subprocess.run(["git", "push", "-q", "origin", "HEAD:main"], cwd=seed,
                                    capture_output=True, text=True, env=aq_env(), timeout=60)
            if pushed.returncode == 0:
                return
            git(seed, "fetch", "-q", "origin")
            git(seed, "rebase", "-q", "origin/main")
        raise AssertionError("could not push the new jobs: the workers always pushed first")

    # --- workers ---------------------------------------------------------------------------

    def start(self, name: str, clone: Path, *args: str, mode: str | None = "--drain",
              env: dict[str, str] | None = None, prefix: Sequence[str] = ()) -> Worker:
        """`aq run MODE --worker NAME` in `clone` (mode None: forever), in its own process group."""
        log = self.logs / f"{name}.{len(self.workers)}.log"
        argv = [*prefix, sys.executable, "-m", "aq", "run", *([mode] if mode else []), "--worker",
                name, "--poll", self.poll, "--lease-ttl", self.ttl, "--heartbeat", self.heartbeat,
                *args]
        with open(log, "wb") as out:
            proc = subprocess.Popen(argv, cwd=clone, env=aq_env(env), stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        worker = Worker(name, clone, proc, log)
        self.workers.append(worker)
        return worker

    def kill(self, worker: Worker) -> None:
        """kill -9 the worker process alone, as a crash would: its git children are orphaned."""
        worker.killed = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.proc.pid, signal.SIGKILL)
        worker.proc.wait(timeout=30)

    def stop(self, worker: Worker, within: float = 60.0) -> int:
        """SIGTERM: the worker finishes or hands back what it holds and exits; its exit code."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.proc.pid, signal.SIGTERM)
        try:
            return worker.proc.wait(timeout=within)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{worker.name} did not stop on SIGTERM:\n{worker.output()[-3000:]}"
                                 ) from None

    def close(self) -> None:
        for worker in self.workers:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(worker.proc.pid, signal.SIGKILL)
        for worker in self.workers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.proc.wait(timeout=30)
        if self.daemon is not None:
            self.daemon.stop()

    def tracebacks(self) -> list[str]:
        return [f"{w.name}: {w.log.name}" for w in self.workers if "Traceback" in w.output()]

    def tail(self, lines: int = 15) -> str:
        return "\n".join(f"--- {w.name} ({w.log.name}, rc {w.proc.poll()}):\n"
                         + "\n".join(w.output().splitlines()[-lines:]) for w in self.workers[-8:])

    # --- the remote, read directly ---------------------------------------------------------

    def stages(self) -> dict[str, list[str]]:
        """job id -> the stages holding it on the remote's main (read from the bare repo)."""
        listed = git(self.root, "--git-dir", str(self.remote), "ls-tree", "-r", "--name-only",
                     "refs/heads/main", "--", "queue").splitlines()
        found: dict[str, list[str]] = defaultdict(list)
        for path in listed:
            parts = path.split("/")
            if len(parts) == 3 and parts[1] in STAGES and parts[2].endswith(".md"):
                found[parts[2][:-3]].append(parts[1])
        return dict(found)

    def all_final(self, ids: Iterable[str]) -> bool:
        stages = self.stages()
        return all(len(stages.get(job_id, [])) == 1 and stages[job_id][0] in FINAL for job_id in ids)

    def kill_remote_git(self) -> int:
        """kill -9 the remote's git processes serving a fetch or push right now (this remote's
        only: matched by its path on the command line, or by their working folder)."""
        return kill_git_serving(self.remote)


def kill_git_serving(remote: Path) -> int:
    """What `pkill -9 -f 'git-receive-pack|git-upload-pack|git receive-pack|git upload-pack'`
    does, restricted to one remote: a local transport names the path on the command line
    (`git-receive-pack '/path'`, under `sh -c`); git daemon's children (`git-upload-pack
    --strict --timeout=0 .`) run with the repository as their working folder."""
    target = str(remote)
    killed = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{entry.name}/cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace")
            cwd = os.readlink(f"/proc/{entry.name}/cwd")
        except OSError:
            continue
        if PACK_SERVER.search(cmd) and (target in cmd or cwd == target):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)
                killed += 1
    return killed


def clear_stale_remote_locks(remote: Path, older_than: float = 5.0) -> int:
    """Remove lock files a killed git process left in the remote, as its operator would after a
    crash: git never removes a dead process's `refs/heads/main.lock`, and until someone does
    every push to main fails. A live receive-pack holds a ref lock for a millisecond or so; one
    `older_than` seconds old has no owner left."""
    now = time.time()
    removed = 0
    for path in [*remote.glob("*.lock"), *remote.glob("refs/**/*.lock")]:
        with contextlib.suppress(FileNotFoundError):
            if now - path.stat().st_mtime >= older_than:
                path.unlink()
                removed += 1
    return removed


# --- the chaos loop ------------------------------------------------------------------------------

@dataclass
class Slot:
    """One place a worker runs: a clone, and how its process is started (env, argv prefix)."""

    base: str
    clone: Path
    env: dict[str, str] = field(default_factory=dict)
    prefix: tuple[str, ...] = ()
    gen: int = 0
    worker: Worker | None = None
    exited_at: float | None = None


@dataclass
class ChaosLog:
    worker_kills: int = 0
    remote_kills: int = 0  # git processes of the remote killed
    stale_locks: int = 0  # lock files they left on the remote, removed by the "operator"
    restarts: int = 0
    early_exits: list[str] = field(default_factory=list)  # drain workers that quit, inbox not empty
    killed_pids: set[int] = field(default_factory=set)
    started_pids: set[int] = field(default_factory=set)

    def survivors(self) -> set[int]:
        """Worker processes that were never killed."""
        return self.started_pids - self.killed_pids


def start_slot(fleet: Fleet, slot: Slot, log: ChaosLog, fresh_name: bool) -> None:
    if fresh_name:
        slot.gen += 1
    name = slot.base if slot.gen == 0 else f"{slot.base}g{slot.gen}"
    slot.worker = fleet.start(name, slot.clone, env=slot.env, prefix=slot.prefix)
    slot.exited_at = None
    log.started_pids.add(slot.worker.proc.pid)


def run_chaos(
    fleet: Fleet,
    slots: list[Slot],
    ids: Sequence[str],
    *,
    kill_every: tuple[float, float] | None = (1.0, 3.0),
    remote_kill_every: tuple[float, float] | None = (0.5, 2.0),
    same_name: float = 0.5,
    deadline: float = 150.0,
    faults_for: float | None = None,
    extra: Callable[[float], None] | None = None,
    rng: random.Random | None = None,
) -> ChaosLog:
    """Start a worker in every slot and break things until every job is in a final stage.

    Every `kill_every` seconds a random worker gets kill -9 and is restarted at once (its own
    name again with probability `same_name`, else a new one); every `remote_kill_every`
    seconds the remote's in-flight git processes get kill -9. A drain worker that exits while
    jobs are unfinished is restarted (and noted). Faults stop after `faults_for` seconds if
    given; `extra(elapsed)` is called every round for other faults. Then the workers drain:
    they must exit on their own, status 0.
    """
    rng = rng or random.Random()
    log = ChaosLog()
    for slot in slots:
        start_slot(fleet, slot, log, fresh_name=False)
    start = time.monotonic()
    next_kill = start + rng.uniform(*kill_every) if kill_every else float("inf")
    next_remote = start + rng.uniform(*remote_kill_every) if remote_kill_every else float("inf")
    next_look = start
    waiting = True  # some job is still in the inbox
    while True:
        now = time.monotonic()
        elapsed = now - start
        assert elapsed < deadline, (f"not every job reached a final stage within {deadline:.0f}s: "
                                    f"{_unfinished(fleet, ids)}\n{fleet.tail()}")
        faulting = faults_for is None or elapsed < faults_for
        if now >= next_look:
            next_look = now + 0.5
            unfinished = _unfinished(fleet, ids)
            if not unfinished:
                break
            waiting = any("inbox" in stages for stages in unfinished.values())
        if faulting and now >= next_kill:
            next_kill = now + rng.uniform(*kill_every)  # type: ignore[misc]
            victim = rng.choice([s for s in slots if s.worker is not None and s.worker.alive()]
                                or slots)
            if victim.worker is not None and victim.worker.alive():
                fleet.kill(victim.worker)
                log.worker_kills += 1
                log.killed_pids.add(victim.worker.proc.pid)
            start_slot(fleet, victim, log, fresh_name=rng.random() >= same_name)
            log.restarts += 1
        if faulting and now >= next_remote:
            next_remote = now + rng.uniform(*remote_kill_every)  # type: ignore[misc]
            log.remote_kills += fleet.kill_remote_git()
        if extra is not None and faulting:
            extra(elapsed)
        log.stale_locks += clear_stale_remote_locks(fleet.remote)
        for slot in slots:
            worker = slot.worker
            if worker is None or worker.alive():
                continue
            if slot.exited_at is None:
                slot.exited_at = now
                if not worker.killed:
                    assert worker.proc.returncode == 0, worker.output()[-3000:]
                    if waiting:
                        log.early_exits.append(worker.name)
            elif now - slot.exited_at > 1.0 and (waiting or not any(
                    s.worker is not None and s.worker.alive() for s in slots)):
                start_slot(fleet, slot, log, fresh_name=False)  # a drain worker quit with work left
                log.restarts += 1
        time.sleep(0.1)
    drain(fleet)
    return log


def drain(fleet: Fleet, within: float = 90.0) -> None:
    """Every drain worker still running exits on its own, status 0, once nothing is left."""
    end = time.monotonic() + within
    for worker in fleet.workers:
        if worker.killed:
            continue
        try:
            code = worker.proc.wait(timeout=max(1.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{worker.name} did not drain and exit:\n{worker.output()[-3000:]}"
                                 ) from None
        assert code == 0, f"{worker.name} exited {code}:\n{worker.output()[-3000:]}"


def _unfinished(fleet: Fleet, ids: Iterable[str]) -> dict[str, list[str]]:
    stages = fleet.stages()
    return {job_id: stages.get(job_id, []) for job_id in ids
            if len(stages.get(job_id, [])) != 1 or stages[job_id][0] not in FINAL}


# --- the audit -----------------------------------------------------------------------------------

@dataclass
class Audit:
    stages: dict[str, str]
    problems: list[str]
    executions: int = 0
    extra: int = 0  # executions beyond the first of each job
    reclaims: int = 0  # moves out of building with outcome lease_expired
    interrupted: int = 0  # attempts a worker stopped itself (outcome interrupted)
    retries: int = 0
    stale: int = 0  # fenced late results
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    claims: dict[str, dict[str, Any]] = field(default_factory=dict)  # lease token -> its claim

    def figures(self) -> str:
        counts = Counter(self.stages.values())
        return (f"jobs {len(self.stages)} {dict(sorted(counts.items()))}, executions "
                f"{self.executions}, extra {self.extra}, reclaims {self.reclaims}, interrupted "
                f"{self.interrupted}, retries {self.retries}, stale results {self.stale}")

    def leases_lost_by(self, pids: set[int]) -> list[tuple[str, dict[str, Any]]]:
        """(job id, event) of each move out of building (lease expired, or the holder stopped
        itself) of a lease that a worker process in `pids` had claimed."""
        return [(job_id, e) for job_id, found in self.events.items() for e in found
                if e.get("type") == "finished" and e.get("outcome") in ("lease_expired", "interrupted")
                and self.claims.get(str(e.get("token")), {}).get("pid") in pids]


def check_survivors_and_dead_letters(fleet: Fleet, result: Audit, chaos: ChaosLog) -> None:
    """No worker that was never killed lost a lease (the lines of the workers about each job
    it lost, if one did); every job final in testing or dead_letter, and a job whose workers
    were killed under it max_reclaims times dead-lettered by lease expiries: that is the
    lifecycle (DESIGN §3), not a loss."""
    lost = result.leases_lost_by(chaos.survivors())
    assert lost == [], "\n".join(
        [repr(lost)] + [line for worker in fleet.workers for line in worker.output().splitlines()
                        if any(job_id in line for job_id, _ in lost)])
    assert set(result.stages.values()) <= {"testing", "dead_letter"}
    for job_id, stage in result.stages.items():
        if stage == "dead_letter":
            last = [e for e in result.events[job_id] if e.get("type") == "finished"][-1]
            assert last.get("outcome") == "lease_expired", (job_id, last)


def audit(fleet: Fleet, ids: Sequence[str], name: str = "audit") -> Audit:
    """Check the end state from a fresh clone of the remote, its event log and the ledger.

    Every job in exactly one final stage, no job lost or unknown, `aq fsck --history` clean,
    `git fsck` clean on the remote, no job executed twice under one lease token, every
    execution under a claim that landed, every extra execution explained by a lease expiry or
    a retry, and the attempt that moved a job to its final stage really ran.
    """
    clone = fleet.clone(name)
    problems: list[str] = []
    stages: dict[str, str] = {}
    for stage in STAGES:
        for path in (clone / "queue" / stage).glob("*.md"):
            if path.stem in stages:
                problems.append(f"{path.stem} is in {stages[path.stem]} and {stage}")
            stages[path.stem] = stage
    for job_id in ids:
        if job_id not in stages:
            problems.append(f"{job_id} is lost: in no stage on the remote's main")
        elif stages[job_id] not in FINAL:
            problems.append(f"{job_id} is in {stages[job_id]}, not a final stage")
    problems += [f"{job_id}: a job nobody added" for job_id in stages if job_id not in set(ids)]

    fsck = run_aq("fsck", "--history", cwd=clone, timeout=120)
    if fsck.returncode != 0:
        problems.append(f"aq fsck --history exit {fsck.returncode}: {fsck.stdout}{fsck.stderr}")
    gfsck = subprocess.run(["git", "fsck", "--strict", "--no-progress"], cwd=fleet.remote,
                           capture_output=True, text=True, env=aq_env(), timeout=120)
    if gfsck.returncode != 0:
        problems.append(f"git fsck on the remote exit {gfsck.returncode}: {gfsck.stderr[-2000:]}")

    result = Audit(stages, problems)
    ledger: dict[str, Counter[tuple[int, str]]] = defaultdict(Counter)
    for line in fleet.ledger.read_text().splitlines():
        job_id, attempt, worker = line.split()
        ledger[job_id][int(attempt), worker] += 1
        result.executions += 1
    for job_id in ids:
        path = clone / "queue" / ".events" / f"{job_id}.jsonl"
        found = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []
        result.events[job_id] = found
        _audit_job(job_id, stages.get(job_id), found, ledger.get(job_id, Counter()), result)
    result.problems += [f"a traceback reached a worker's output: {t}" for t in fleet.tracebacks()]
    return result


def _audit_job(job_id: str, stage: str | None, events: list[dict[str, Any]],
               runs: Counter[tuple[int, str]], result: Audit) -> None:
    problems = result.problems
    claims: dict[int, dict[str, Any]] = {}
    for event in events:
        if event.get("type") == "claimed":
            if event["attempt"] in claims:
                problems.append(f"{job_id}: attempt {event['attempt']} claimed twice: {event['token']}"
                                f" and {claims[event['attempt']]['token']}")
            claims[event["attempt"]] = event
            result.claims[str(event["token"])] = event
    ends = defaultdict(list)
    for event in events:
        if event.get("type") == "finished":
            ends[event.get("token")].append(event)
            result.reclaims += event.get("outcome") == "lease_expired"
            result.interrupted += event.get("outcome") == "interrupted"
            result.retries += event.get("action") == "retry"
        result.stale += event.get("type") == "stale_result"
    for (attempt, worker), count in runs.items():
        claim = claims.get(attempt)
        if count > 1:
            problems.append(f"{job_id}: executed {count} times under one lease (attempt {attempt}, "
                            f"{worker})")
        if claim is None or claim.get("by") != worker:
            problems.append(f"{job_id}: attempt {attempt} ran on {worker} without a claim of its own "
                            f"on the remote (claim: {claim})")
    result.extra += max(0, sum(runs.values()) - 1)
    final = [e for e in events if e.get("type") == "finished" and e.get("to") == stage]
    if stage in ("review", "testing"):
        if not final or final[-1].get("outcome") != "ok":
            problems.append(f"{job_id}: in {stage} but no successful attempt moved it there")
            return
        last = final[-1]
        done = next((a for a, c in claims.items() if c["token"] == last["token"]), None)
        if done is None or (done, last["by"]) not in runs:
            problems.append(f"{job_id}: the attempt that moved it to {stage} ({last['token']}) "
                            "never ran")
        reruns = [(a, w) for a, w in runs if a != done]
    else:
        reruns = list(runs)
        if stage == "dead_letter" and not any(e.get("outcome") == "lease_expired"
                                              or e.get("action") == "retry" for e in events):
            problems.append(f"{job_id}: in dead_letter with neither reclaims nor retries")
    for attempt, worker in reruns:
        token = claims[attempt]["token"] if attempt in claims else None
        if not any(e.get("outcome") in ("lease_expired", "interrupted") or e.get("reclaim")
                   or e.get("action") in ("reclaim", "retry") for e in ends.get(token, [])):
            problems.append(f"{job_id}: attempt {attempt} on {worker} was one more execution, "
                            f"and its lease {token} ended with no {EXPLAINS_RERUN}: "
                            f"{ends.get(token)}")


# --- transport: git daemon -----------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class GitDaemon:
    """`git daemon` serving one folder on 127.0.0.1, push enabled; killed with its children."""

    def __init__(self, base: Path, log: Path) -> None:
        self.base = base
        self.port = free_port()
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url_base(self) -> str:
        return f"git://127.0.0.1:{self.port}"

    def start(self, within: float = 20.0) -> None:
        argv = ["git", "daemon", "--reuseaddr", f"--base-path={self.base}", "--export-all",
                "--enable=receive-pack", f"--port={self.port}", "--listen=127.0.0.1",
                "--informative-errors", str(self.base)]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(argv, env=aq_env(), stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        end = time.monotonic() + within
        while time.monotonic() < end:
            assert self.proc.poll() is None, self.log.read_text()
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.5):
                return
            time.sleep(0.05)
        raise AssertionError(f"git daemon did not listen on {self.port}: {self.log.read_text()}")

    def stop(self) -> None:
        """kill -9 the daemon and every connection it is serving (its process group)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=30)
        self.proc = None


def serve(fleet: Fleet) -> GitDaemon:
    """Serve the fleet's remote over git daemon; clones made after this use git://."""
    daemon = GitDaemon(fleet.remote.parent, fleet.logs / "daemon.log")
    daemon.start()
    fleet.daemon = daemon
    fleet.url = f"{daemon.url_base}/{fleet.remote.name}"
    return daemon


# --- clocks: libfaketime -------------------------------------------------------------------------

SHIM = r"""
/* Debian bookworm's libfaketime 0.9.10 cannot run Python >= 3.11 with threads as it is:
   by default it fakes CLOCK_MONOTONIC too, and every timed lock wait (sem_clockwait on the
   faked monotonic deadline) hangs (wolfcw/libfaketime#390); with FAKETIME_DONT_FAKE_MONOTONIC=1
   an absolute CLOCK_MONOTONIC clock_nanosleep (Python's time.sleep) becomes a negative time
   and fails with EINVAL (#426). Loaded before libfaketime, this sends monotonic sleeps to the
   kernel untouched; everything else (the wall clock) is libfaketime's. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int clock_nanosleep(clockid_t clock_id, int flags, const struct timespec *req, struct timespec *rem) {
    if (clock_id == CLOCK_REALTIME) {
        int (*next)(clockid_t, int, const struct timespec *, struct timespec *) =
            (int (*)(clockid_t, int, const struct timespec *, struct timespec *))
            dlsym(RTLD_NEXT, "clock_nanosleep");
        return next(clock_id, flags, req, rem);
    }
    return syscall(SYS_clock_nanosleep, clock_id, flags, req, rem) == -1 ? errno : 0;
}
"""


def libfaketime() -> Path | None:
    """The preload library of Debian's `libfaketime` package (pulled in by `faketime`)."""
    for pattern in ("/usr/lib/*/faketime/libfaketime.so.1", "/usr/lib/faketime/libfaketime.so.1",
                    "/usr/local/lib/faketime/libfaketime.so.1"):
        found = sorted(Path("/").glob(pattern.lstrip("/")))
        if found:
            return found[0]
    return None


def skewed_clock_env(offset: str, lib: Path, shim: Path) -> dict[str, str]:
    """The environment that gives a process (and its git and engine children) a wall clock
    `offset` off (`+1h`, `-1h`), its monotonic clock untouched. What `faketime -f OFFSET`
    sets, without the fork `faketime` puts between the test and the worker it kills."""
    return {"LD_PRELOAD": f"{shim}:{lib}", "FAKETIME": offset, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


def build_shim(folder: Path) -> Path | None:
    """Compile the monotonic-sleep shim; None when there is no C compiler."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    source, lib = folder / "ftshim.c", folder / "ftshim.so"
    source.write_text(SHIM)
    done = subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-o", str(lib), str(source), "-ldl"],
                          capture_output=True, text=True, timeout=120)
    return lib if done.returncode == 0 else None


def other_host_prefix(hostname: str) -> tuple[str, ...] | None:
    """argv prefix running a command under another host name (its own UTS namespace), so that
    no worker can see from a pid that it died: only its heartbeats tell. None if not allowed."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    probe = subprocess.run([unshare, "--uts", "sh", "-c", f"hostname {hostname} && hostname"],
                           capture_output=True, text=True, timeout=30)
    if probe.returncode != 0 or probe.stdout.strip() != hostname:
        return None
    return (unshare, "--uts", "sh", "-c", f'hostname {hostname} && exec "$@"', "sh")
