"""`aq run`: a worker that claims jobs, runs attempts, and records where each job goes next.

A claim is a transaction that picks from what is on disk under the queue lock and renames
inbox -> building with a `claimed` event carrying a fresh lease token. A finished attempt is a
transaction that moves the job only if it is still in building under the same token; otherwise
the result is fenced and kept as a `stale_result` event with its log.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import FrameType

from aq import proc
from aq.attempt import AttemptPlan, AttemptResult, execute
from aq.core.events import CLAIMED, FINISHED, STALE_RESULT, iso
from aq.core.lifecycle import Outcome, Stage, decide, failure_fingerprint
from aq.core.scheduler import assess
from aq.store import Job, Queue, Tx

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def default_worker_id() -> str:
    return f"{socket.gethostname().split('.')[0].lower()}-{os.getpid()}"


@dataclass(frozen=True, slots=True)
class Claim:
    job: Job
    attempt: int
    token: str


@dataclass
class Running:
    claim: Claim
    thread: threading.Thread
    stop: threading.Event
    result: AttemptResult | None = None
    stop_reason: str | None = None


@dataclass
class RunSummary:
    claimed: int = 0
    finished: dict[str, str] = field(default_factory=dict)  # job id -> stage it went to
    stale: list[str] = field(default_factory=list)
    interrupted: bool = False


class Worker:
    def __init__(
        self,
        queue: Queue,
        *,
        worker_id: str | None = None,
        max_jobs: int = 1,
        poll: float | None = None,
        mode: str = "forever",  # "once", "drain" or "forever"
        capabilities: frozenset[str] | None = None,
        clock: Clock = utc_now,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.queue = queue
        self.config = queue.config
        self.worker_id = worker_id or default_worker_id()
        self.max_jobs = max(1, max_jobs)
        self.poll = poll if poll is not None else self.config.poll
        self.mode = mode
        self.capabilities = capabilities
        self.clock = clock
        self.say = say or (lambda text: print(text, flush=True))
        self.running: dict[str, Running] = {}
        self.summary = RunSummary()
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._warned: set[str] = set()

    # --- the loop --------------------------------------------------------------------------

    def run(self) -> RunSummary:
        restore = self._install_signals()
        try:
            self._loop()
        finally:
            restore()
        return self.summary

    def request_stop(self, reason: str = "stop requested") -> None:
        if not self._stopping.is_set():
            self.say(f"{self.worker_id}: {reason}; stopping the jobs it runs")
        self._stopping.set()
        self.summary.interrupted = True
        for running in self.running.values():
            running.stop_reason = running.stop_reason or reason
            running.stop.set()
        self._wake.set()

    def _loop(self) -> None:
        next_orphan_check = 0.0
        while True:
            self._reap()
            if not self._stopping.is_set() and time.monotonic() >= next_orphan_check:
                self._recover_orphans()
                next_orphan_check = time.monotonic() + self.poll
            if self._stopping.is_set():
                if not self.running:
                    return
            else:
                claimed_now = self._claim_up_to_capacity()
                if self.mode == "once" and self.summary.claimed >= 1 and not self.running:
                    return
                if self._finished_draining(claimed_now):
                    if self.summary.claimed == 0:
                        self.say(f"{self.worker_id}: nothing to run")
                    return
            self._watch_cancellations()
            self._wake.wait(timeout=0.2 if self.running else self._idle_wait())
            self._wake.clear()

    def _finished_draining(self, claimed_now: int) -> bool:
        if self.mode not in ("once", "drain") or self.running or claimed_now:
            return False
        return self.mode == "once" or not self._waiting_on_time()

    def _idle_wait(self) -> float:
        return min(self.poll, 1.0) if self.mode == "drain" else self.poll

    def _install_signals(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def handler(signum: int, _frame: FrameType | None) -> None:
            self.request_stop(f"got {signal.Signals(signum).name}")

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

        def restore() -> None:
            for sig, old in previous.items():
                signal.signal(sig, old)

        return restore

    def _waiting_on_time(self) -> bool:
        """True while some inbox job waits only for its retry time (drain waits for it)."""
        verdicts = assess(self.queue.snapshot().views(), self.clock(), halted=self.queue.halted(),
                          worker_caps=self.capabilities)
        return any(v.kind == "not_before" for v in verdicts)

    # --- claiming --------------------------------------------------------------------------

    def _claim_up_to_capacity(self) -> int:
        count = 0
        while len(self.running) < self.max_jobs and not self._stopping.is_set():
            if self.mode == "once" and self.summary.claimed >= 1:
                break
            claim = self.queue.transact(self._claim, f"aq: claim by {self.worker_id}",
                                        describe=lambda c: f"aq: claim {c.job.id if c else ''} by {self.worker_id}")
            if claim is None:
                break
            count += 1
            self._start(claim)
        return count

    def _claim(self, tx: Tx) -> Claim | None:
        snapshot = self.queue.snapshot()
        self._warn_invalid(snapshot.jobs, snapshot.problems)
        verdicts = assess(snapshot.views(), self.clock(), halted=self.queue.halted(),
                          worker_caps=self.capabilities)
        chosen = next((v.job for v in verdicts if v.ready), None)
        if chosen is None:
            return None
        job = snapshot.by_id()[chosen.id]
        attempt = job.state.attempt_count + 1
        token = f"{attempt}.{self.worker_id}.{secrets.token_hex(3)}"
        now = self.clock()
        tx.move(job.id, Stage.INBOX, Stage.BUILDING, {
            "ts": iso(now), "type": CLAIMED, "by": self.worker_id, "from": Stage.INBOX,
            "to": Stage.BUILDING, "attempt": attempt, "token": token,
            "host": socket.gethostname(), "pid": os.getpid(),
        })
        return Claim(job, attempt, token)

    def _warn_invalid(self, jobs: tuple[Job, ...], problems: tuple[str, ...]) -> None:
        lines = [job.error for job in jobs if job.stage is Stage.INBOX and job.error] + list(problems)
        for line in lines:
            if line and line not in self._warned:
                self._warned.add(line)
                print(f"aq: skipping {line}", file=sys.stderr, flush=True)

    # --- running ---------------------------------------------------------------------------

    def _start(self, claim: Claim) -> None:
        self.summary.claimed += 1
        job = claim.job
        assert job.manifest is not None  # only valid manifests are ever picked
        self.say(f"{self.worker_id}: claimed {job.id} (attempt {claim.attempt}): {job.manifest.title}")
        plan = AttemptPlan(
            job_id=job.id, attempt=claim.attempt, token=claim.token, worker=self.worker_id,
            manifest=job.manifest, queue_root=self.queue.root,
            run_dir=self.queue.running_dir() / job.id,
            previous_failure=job.state.last_failure_tail, wall_used=job.state.wall_used,
        )
        running = Running(claim, threading.Thread(), threading.Event())
        running.thread = threading.Thread(target=self._attempt, args=(running, plan),
                                          name=f"attempt-{job.id}", daemon=True)
        self.running[job.id] = running
        running.thread.start()

    def _attempt(self, running: Running, plan: AttemptPlan) -> None:
        try:
            running.result = execute(plan, self.config, stop=running.stop)
        finally:
            self._wake.set()

    def _reap(self) -> None:
        for job_id, running in list(self.running.items()):
            if running.thread.is_alive():
                continue
            del self.running[job_id]
            if running.result is None:  # the attempt thread died of a bug: leave the lease to expire
                self.say(f"{self.worker_id}: attempt of {job_id} ended without a result")
                continue
            self._finish(running.claim, running.result, running.stop_reason)

    def _watch_cancellations(self) -> None:
        """Stop an attempt whose job left building under us (canceled, or taken by another)."""
        for job_id, running in self.running.items():
            if running.stop.is_set():
                continue
            path = self.queue.job_path(Stage.BUILDING, job_id)
            if not path.exists():
                running.stop_reason = "the job left building while it ran (canceled?)"
                running.stop.set()

    def _recover_orphans(self) -> None:
        """Put back building jobs whose worker on this host is gone (killed -9, machine crash).

        Only a worker on this host can be checked this way (by its pid); jobs held on other
        machines wait for the lease protocol of the fleet.
        """
        host = socket.gethostname()
        for job in self.queue.snapshot().jobs:
            state = job.state
            if (job.stage is Stage.BUILDING and job.id not in self.running and state.token
                    and state.holder_host == host and state.holder_pid
                    and not _pid_alive(state.holder_pid)):
                self.queue.transact(functools.partial(self._reclaim, job),
                                    f"aq: reclaim {job.id} from dead worker {state.holder}")

    def _reclaim(self, job: Job, tx: Tx) -> None:
        state = tx.state(job.id)
        if tx.stage_of(job.id) is not Stage.BUILDING or state.token != job.state.token:
            return  # someone got there first
        decision = decide(
            Outcome.INTERRUPTED, verified=None, review_policy="manual",
            retry=self.config.retry_rule(job.manifest) if job.manifest else self.config.retry_rule_default(),
            retries_used=state.retries_used, fingerprint=None, last_fingerprint=state.last_fingerprint,
            reclaims=state.reclaims, max_reclaims=self.config.max_reclaims, now=self.clock(),
        )
        why = f"worker {state.holder} (pid {state.holder_pid}) on this host is gone: {decision.reason}"
        log_rel = None
        run_dir = self.queue.running_dir() / job.id
        with contextlib.suppress(OSError, ValueError):  # what the dead worker's engine left running
            proc.kill_group(int((run_dir / f"{state.attempt_count}.pgid").read_text()))
        live = run_dir / f"{state.attempt_count}.log"
        if live.exists():  # what the dead attempt wrote (already scrubbed) is kept, its tail if long
            data = live.read_bytes()[-self.config.log_max:]
            kept = self.queue.logs_dir(job.id) / f"{state.attempt_count}.log"
            tx.write(kept, data + f"\n[aq] {why}\n".encode())
            log_rel = self.queue.relative(kept)
            shutil.rmtree(live.parent, ignore_errors=True)
        tx.move(job.id, Stage.BUILDING, decision.to, {
            "ts": iso(self.clock()), "type": FINISHED, "by": self.worker_id, "from": Stage.BUILDING,
            "to": decision.to, "action": decision.action, "attempt": state.attempt_count,
            "token": state.token, "outcome": Outcome.INTERRUPTED, "why": why, "reclaim": True,
            "log": log_rel,
        })
        self.say(f"{self.worker_id}: {job.id}: {why} -> {decision.to}")

    # --- finishing -------------------------------------------------------------------------

    def _finish(self, claim: Claim, result: AttemptResult, stop_reason: str | None) -> None:
        job_id = claim.job.id
        moved = self.queue.transact(
            lambda tx: self._record(tx, claim, result, stop_reason),
            f"aq: {job_id} attempt {claim.attempt} {result.outcome} by {self.worker_id}",
        )
        shutil.rmtree(self.queue.running_dir() / job_id, ignore_errors=True)
        if moved is None:
            self.summary.stale.append(job_id)
            self.say(f"{self.worker_id}: {job_id}: result kept as stale_result (the job is no longer ours)")
        else:
            self.summary.finished[job_id] = moved
            self.say(f"{self.worker_id}: {job_id}: {result.detail} -> {moved}")

    def _record(self, tx: Tx, claim: Claim, result: AttemptResult, stop_reason: str | None
                ) -> str | None:
        job_id, manifest = claim.job.id, claim.job.manifest
        assert manifest is not None
        now = self.clock()
        log_rel = self._keep_log(tx, job_id, claim.attempt, result)
        stage, state = tx.stage_of(job_id), tx.state(job_id)
        if stage is not Stage.BUILDING or state.token != claim.token:
            tx.append_event(job_id, {
                "ts": iso(now), "type": STALE_RESULT, "by": self.worker_id, "attempt": claim.attempt,
                "token": claim.token, "outcome": result.outcome, "log": log_rel,
                "why": f"fenced: the job is in {stage or 'no stage'}"
                       + ("" if state.token == claim.token else " under another lease"),
            })
            return None
        fingerprint = (failure_fingerprint(result.outcome, result.tail)
                       if result.outcome not in (Outcome.OK, Outcome.INTERRUPTED) else None)
        decision = decide(
            result.outcome, verified=result.verified,
            review_policy=manifest.review_policy or "manual",
            retry=self.config.retry_rule(manifest), retries_used=state.retries_used,
            fingerprint=fingerprint, last_fingerprint=state.last_fingerprint,
            reclaims=state.reclaims, max_reclaims=self.config.max_reclaims, now=now,
        )
        artifacts = self._keep_artifacts(tx, job_id, claim.attempt, result)
        why = decision.reason if result.outcome is not Outcome.INTERRUPTED else (
            f"{stop_reason or 'worker stopped'}: {decision.reason}")
        tx.move(job_id, Stage.BUILDING, decision.to, {
            "ts": iso(now), "type": FINISHED, "by": self.worker_id, "from": Stage.BUILDING,
            "to": decision.to, "action": decision.action, "attempt": claim.attempt,
            "token": claim.token, "outcome": result.outcome, "exit_code": result.exit_code,
            "verify_exit": result.verify_exit, "detail": result.detail, "why": why,
            "not_before": iso(decision.not_before) if decision.not_before else None,
            "fingerprint": fingerprint, "tail": result.tail or None, "log": log_rel,
            "artifacts": artifacts, "duration": round(result.duration, 3),
            "reclaim": result.outcome is Outcome.INTERRUPTED,
        })
        return str(decision.to)

    def _keep_log(self, tx: Tx, job_id: str, attempt: int, result: AttemptResult) -> str:
        """Copy the capped, scrubbed log into queue/.logs/<id>/<n>.log (or .stale-<n>.log)."""
        path = self.queue.logs_dir(job_id) / f"{attempt}.log"
        if path.exists():  # a fenced duplicate must not overwrite the log of record
            path = path.with_name(f"{attempt}.stale-{secrets.token_hex(2)}.log")
        tx.write(path, result.log_text)
        return self.queue.relative(path)

    def _keep_artifacts(self, tx: Tx, job_id: str, attempt: int, result: AttemptResult) -> list[str]:
        """Copy the attempt's artifacts to queue/.logs/<id>/<n>/, text scrubbed, within artifact_max."""
        if not result.artifacts or result.cwd is None:
            return []
        from aq.core.scrub import Scrubber

        scrubber = Scrubber(os.environ)
        target = self.queue.logs_dir(job_id) / str(attempt)
        kept: list[str] = []
        budget = self.config.artifact_max
        for path in result.artifacts:
            data = path.read_bytes()
            if len(data) > budget:
                self.say(f"{self.worker_id}: {job_id}: artifact {path.name} skipped: over artifact_max")
                continue
            with contextlib.suppress(UnicodeDecodeError):  # binary: kept as it is
                data = scrubber.text(data.decode("utf-8")).encode()
            budget -= len(data)
            dest = target / path.relative_to(result.cwd)
            tx.write(dest, data)
            kept.append(self.queue.relative(dest))
        return kept


def _pid_alive(pid: int) -> bool:
    """True if `pid` runs; a zombie (dead, not yet reaped) counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, someone else's
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True
