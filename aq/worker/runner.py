"""`aq run`: a worker that claims jobs, runs attempts, and records where each job goes next.

A claim is a transaction that first takes back jobs whose lease expired, then picks from what
is on disk under the queue lock and renames inbox -> building with a `claimed` event carrying a
fresh lease token. With a remote, the claim counts only once pushed (a rejected push means
another machine won; the transaction decides again on the new tip). A finished attempt is a
transaction that moves the job only if it is still in building under the same token;
otherwise the result is fenced and kept as a `stale_result` event with its log.

Leases: the worker force-pushes a heartbeat listing the tokens it holds to its own ref
(`refs/aq/workers/<id>`) every `heartbeat_interval`. A lease is expired when the observer has
seen no renewal for `lease_ttl` on its own monotonic clock while it could see the remote: after
an outage (a fetch that failed) every lease gets a full `lease_ttl` again (aq.core.leases). A
holder that cannot renew for `renew_deadline` stops its attempts, so that no two engines work
one job at once.
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from aq.core.durations import format_duration
from aq.core.events import CLAIMED, FINISHED, NOTE, STALE_RESULT, iso, parse_iso
from aq.core.leases import watch_gap
from aq.core.lifecycle import (
    Action,
    Decision,
    Outcome,
    Stage,
    decide,
    failure_fingerprint,
    reclaim_decision,
)
from aq.core.manifest import Manifest
from aq.core.profile import Profile, apply_profile, choose_engine
from aq.core.scheduler import Routing, Verdict, assess
from aq.errors import AqError, PushUncertain, RemoteBusy, RemoteUnreachable
from aq.infra import proc
from aq.infra.confine import read_file
from aq.infra.usage import Usage
from aq.store.queue import HALT_FILE, Job, Queue, Snapshot, Tx, has_stale_result
from aq.usecases.spend import day_spend, live_usage, queue_budget_crossed
from aq.worker.attempt import AttemptPlan, AttemptResult, crashed_attempt, execute

Clock = Callable[[], datetime]
COURIER_FLUSH = 30.0  # seconds a worker that ends waits for its last tracker posts


def utc_now() -> datetime:
    return datetime.now(UTC)


def usage_fields(result: AttemptResult) -> dict[str, object]:
    """What a `finished` (or `stale_result`) event says of the engine run: which engine and
    version, what it reported it used, and what it left running."""
    fields: dict[str, object] = {}
    if result.engine:
        fields["engine"] = result.engine
    if result.engine_version:
        fields["engine_version"] = result.engine_version
    if result.usage is not None:
        fields["usage"] = result.usage.to_event()
        if result.usage.session and result.cwd is not None:
            fields["session_where"] = f"{socket.gethostname()}:{result.cwd}"
    if result.session_usage is not None:
        fields["session_usage"] = result.session_usage.to_event()
    if result.leftovers:
        fields["leftovers_killed"] = result.leftovers
    return fields


def kill_leftovers(run_dir: Path, attempt: int) -> None:
    """KILL what an attempt of a worker that died left running on this machine: its process
    group and every process carrying its mark (tools that made sessions of their own)."""
    from aq.infra import proctree

    pgid: int | None = None
    with contextlib.suppress(OSError, ValueError):
        pgid = int((run_dir / f"{attempt}.pgid").read_text())
    try:
        mark: str | None = (run_dir / f"{attempt}.mark").read_text().strip() or None
    except OSError:
        mark = None
    if mark is not None:
        proctree.sweep(mark, pgid)
    elif pgid is not None:
        proc.kill_group(pgid)


def default_worker_id() -> str:
    return f"{socket.gethostname().split('.')[0].lower()}-{os.getpid()}"


@dataclass(frozen=True, slots=True)
class Claim:
    job: Job
    attempt: int
    token: str
    event: dict[str, object]
    claimed_at: float  # monotonic, before the claim was pushed: its lease cannot start earlier
    persona: str | None = None  # the profile's, as it was at the claim


@dataclass
class Running:
    claim: Claim
    thread: threading.Thread
    stop: threading.Event
    result: AttemptResult | None = None
    stop_reason: str | None = None
    landed_at: float | None = None  # an offline claim: when this worker saw it reach the remote


@dataclass
class RunSummary:
    claimed: int = 0
    finished: dict[str, str] = field(default_factory=dict)  # job id -> stage it went to
    stale: list[str] = field(default_factory=list)
    reclaimed: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)  # offline claims someone else also took
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
        offline: bool = False,
        lease_ttl: float | None = None,
        heartbeat: float | None = None,
        clock: Clock = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.queue = queue
        self.config = queue.config
        self.remote = queue.remote
        self.worker_id = worker_id or default_worker_id()
        self.max_jobs = max(1, max_jobs)
        self.poll = poll if poll is not None else self.config.poll
        self.mode = mode
        self.capabilities = capabilities
        self.offline = offline
        self.lease_ttl = lease_ttl or self.config.lease_ttl
        self.heartbeat_interval = heartbeat or self.config.heartbeat_interval or self.lease_ttl / 4
        # stop our own attempts well before any observer could see the lease as expired
        self.renew_deadline = max(self.lease_ttl - 2 * self.heartbeat_interval, self.lease_ttl / 2)
        self.clock = clock
        self.monotonic = monotonic
        self.say = say or (lambda text: print(text, flush=True))
        self.running: dict[str, Running] = {}
        self.uncertain: dict[str, Claim] = {}  # claims whose push may or may not have landed
        self.unrecorded: list[tuple[Claim, AttemptResult, str | None]] = []
        self.summary = RunSummary()
        self._stopping = threading.Event()
        self._stopped_gracefully: set[str] = set()  # lease tokens of attempts a TERM/Ctrl-C stopped
        self._wake = threading.Event()
        self._beat_now = threading.Event()
        self._warned: set[str] = set()
        self._waits_said: set[tuple[str, int]] = set()  # (job, attempts) whose retry wait was said
        self._reasons: dict[str, str] = {}
        self._profiles: dict[str, Profile] = {}
        self._leases_seen: tuple[float, dict[str, float], set[str], int] | None = None
        self._heads_pushed: set[str] = set()  # job branch commits pushed after their attempt
        self._push_retry_at: dict[str, float] = {}  # lease token -> when to push its branch again
        self._push_noted: set[str] = set()  # lease tokens whose wait for a push is in the log
        self._renewed_at = self.monotonic()
        self._last_unreachable_note = 0.0
        self._next_refresh = 0.0
        self._unlanded: set[str] = set()
        self._unreachable_since: float | None = None
        self._contended = False  # the last claim lost every race: work is there
        self._silent_leases = False  # some lease held elsewhere is going unrenewed
        from aq.worker.courier import Courier

        self.courier = Courier(queue, self.worker_id, clock, monotonic,
                               lambda line: self.say(f"{self.worker_id}: {line}"))

    # --- the loop --------------------------------------------------------------------------

    def run(self) -> RunSummary:
        self.queue.check_folders()  # a stage folder that is a link: the queue is refused at once
        restore = self._install_signals()
        beating = self._start_heartbeats()
        try:
            with self.queue.lock():
                from aq.infra.gitops import clear_stale_locks, kill_orphaned_git

                for pid in kill_orphaned_git(self.queue.root):
                    self.say(f"{self.worker_id}: stopped git process {pid} left by a killed worker")
                for path in clear_stale_locks(self.queue.git_dir):
                    self.say(f"{self.worker_id}: removed {path} left by a killed process")
            self._rescue_worktrees()
            self._loop()
        finally:
            restore()
            if beating is not None:
                self._stopping.set()
                self._beat_now.set()
                beating.join(timeout=5)
        return self.summary

    def _rescue_worktrees(self) -> None:
        """Worktrees a killed worker left on this machine: their unpushed work goes to a pushed
        `aq/<job>-rescued-<n>` branch, named in the job's event log, and the worktree goes."""
        root = self.config.workspaces_root(self.queue.workspace_key)
        if not (root / "worktrees").is_dir():
            return
        from aq.infra.gitops import identity_args
        from aq.infra.repos import rescue_stale

        host = socket.gethostname()
        live = {job.id for job in self.queue.snapshot().jobs
                if job.stage is Stage.BUILDING and job.state.holder_host == host
                and job.state.holder_pid and proc.pid_alive(job.state.holder_pid)}
        try:
            rescued = rescue_stale(root, lambda job_id: job_id in live, identity_args(self.queue.root))
        except AqError as err:
            self.say(f"{self.worker_id}: could not clean the worktrees left here: {err}")
            return
        for job_id, branch in rescued:
            if not branch:
                continue
            self.say(f"{self.worker_id}: {job_id}: work a killed worker left unpushed is on {branch}")
            event: dict[str, Any] = {"ts": iso(self.clock()), "type": "rescued",
                                     "by": self.worker_id, "branch": branch,
                                     "why": "a worker was killed with this work unpushed"}

            def note(tx: Tx, job_id: str = job_id, event: dict[str, Any] = event) -> None:
                if tx.stage_of(job_id) is not None:
                    tx.append_event(job_id, event)

            try:
                self.queue.transact(note, f"aq: {job_id}: rescued work on {branch}",
                                    owe=lambda _: None)
            except AqError as err:
                self.say(f"{self.worker_id}: {job_id}: the rescue is not in its event log ({err})")

    def request_stop(self, reason: str = "stop requested") -> None:
        if not self._stopping.is_set():
            self.say(f"{self.worker_id}: {reason}; stopping the jobs it runs")
        self._stopping.set()
        self.summary.interrupted = True
        for running in self.running.values():
            if running.stop_reason is None:  # not stopping already for a reason of its own
                self._stopped_gracefully.add(running.claim.token)
            running.stop_reason = running.stop_reason or reason
            running.stop.set()
        self._wake.set()

    def _loop(self) -> None:
        while True:
            self._reap()
            self._record_unrecorded()
            if self._stopping.is_set():
                if not self.running and not self.unrecorded:
                    self._flush_owed()
                    return
            else:
                claimed_now = self._claim_up_to_capacity()
                if self.mode == "once" and self.summary.claimed >= 1 and not self._busy():
                    self._flush_owed()
                    return
                if self._finished_draining(claimed_now):
                    if self.summary.claimed == 0:
                        self.say(f"{self.worker_id}: nothing to run")
                    self._flush_owed()
                    return
            self._check_renewal()
            self._say_notices()
            self._refresh_while_busy()
            self._settle_uncertain()
            self._watch_cancellations()
            self.courier.tick()
            self._wake.wait(timeout=0.2 if self._busy() else self._idle_wait())
            self._wake.clear()

    def _say_notices(self) -> None:
        while self.queue.notices:
            self.say(f"{self.worker_id}: {self.queue.notices.pop(0)}")

    def _refresh_while_busy(self) -> None:
        """At capacity a worker claims nothing, so it fetches on its own every poll: to see a
        job canceled or taken from it elsewhere, and to send owed work."""
        if self.remote is None or not self._busy():
            return
        now = self.monotonic()
        if now < self._next_refresh:
            return
        self._next_refresh = now + self.poll
        try:
            self.queue.transact(self._keep_watch, "aq: refresh", owe=lambda _: None)
        except AqError as err:
            self.say(f"{self.worker_id}: could not refresh from the remote: {err}")
        self._drop_landed()

    def _keep_watch(self, tx: Tx) -> None:
        """A busy worker's refresh notes the heartbeats now and then, so that this machine's
        watch of the remote does not lapse while all its workers are busy: a lapsed watch
        restarts every lease's silence (aq.core.leases), which delays taking back a dead one."""
        last, gap = self._leases_seen, watch_gap(self.lease_ttl, self.poll)
        if self.remote is None or not tx.online or (
                last is not None and self.monotonic() - last[0] < gap / 3):
            return
        every = {job.state.token: job for job in self.queue.snapshot().jobs
                 if job.stage is Stage.BUILDING and job.state.token}
        if every:
            self._observe_leases(every)

    def _drop_landed(self) -> None:
        if not self.queue.owed:
            self._unlanded.clear()

    def _busy(self) -> bool:
        return bool(self.running or self.uncertain or self.unrecorded or self.queue.owed)

    def _finished_draining(self, claimed_now: int) -> bool:
        if self.mode not in ("once", "drain") or self._busy() or claimed_now or self._contended:
            return False
        if (self.mode == "drain" and self.remote is not None and not self.queue.last_sync_ok
                and self._unreachable_for() < self.lease_ttl):
            return False  # the remote is away: what is left there is unknown, so wait (a while)
        return self.mode == "once" or not self._waiting_on_others()

    def _unreachable_for(self) -> float:
        now = self.monotonic()
        if self.queue.last_sync_ok:
            self._unreachable_since = None
            return 0.0
        if self._unreachable_since is None:
            self._unreachable_since = now
        return now - self._unreachable_since

    def _waiting_on_others(self) -> bool:
        """True while an inbox job will become takeable without a person: its retry time is
        coming, or (drain) it waits for a job that is running or for a lock a running job holds."""
        snapshot = self.queue.snapshot()
        verdicts = self._assess(snapshot)
        self._say_retry_waits(snapshot, verdicts)
        return any(v.kind == "not_before" for v in verdicts) or self._silent_leases or (
            self.remote is not None
            and any(job.stage is Stage.BUILDING for job in snapshot.jobs)
            and any(v.kind in ("dep", "lock") for v in verdicts))

    def _say_retry_waits(self, snapshot: Snapshot, verdicts: list[Verdict]) -> None:
        """Once per retry: what a draining worker waits for, and until when (else a long backoff
        looks like a hang)."""
        waiting = [v.job for v in verdicts if v.kind == "not_before"
                   and (v.job.id, v.job.state.attempt_count) not in self._waits_said]
        if not waiting:
            return
        waits = self._retry_waits(snapshot)
        now = self.clock()
        for job in waiting:
            self._waits_said.add((job.id, job.state.attempt_count))
            if waits is not None:
                seconds = waits.get(job.id, 0.0)
            else:
                not_before = job.state.not_before
                seconds = (parse_iso(not_before) - now).total_seconds() if not_before else 0.0
            until = (now + timedelta(seconds=seconds)).strftime("%H:%M:%S")
            self.say(f"{self.worker_id}: waiting {format_duration(seconds)} for {job.id}'s retry "
                     f"backoff (until {until} UTC)")

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

    # --- claiming --------------------------------------------------------------------------

    def _claim_up_to_capacity(self) -> int:
        self._contended = False
        count = 0
        while len(self.running) + len(self.uncertain) < self.max_jobs and not self._stopping.is_set():
            if self.mode == "once" and self.summary.claimed >= 1:
                break
            claim = self._transact_claim()
            if claim is None:
                break
            count += 1
            self._start(claim)
        return count

    def _transact_claim(self) -> Claim | None:
        owe = (lambda c: functools.partial(self._replay_claim, c) if c else None) if self.offline else None
        try:
            claim: Claim | None = self.queue.transact(
                self._claim, f"aq: claim by {self.worker_id}",
                describe=lambda c: f"aq: claim {c.job.id if c else ''} by {self.worker_id}", owe=owe)
            return claim
        except RemoteUnreachable:
            self._note_unreachable("claiming nothing new until it answers")
        except PushUncertain as err:
            if isinstance(err.result, Claim):
                self.uncertain[err.result.job.id] = err.result
                self.say(f"{self.worker_id}: {err.result.job.id}: the remote stopped answering during "
                         "the claim; it runs once the claim is confirmed")
        except RemoteBusy as err:
            self._contended = True  # others kept winning: there is work, try again shortly
            self.say(f"{self.worker_id}: {err}")
        except AqError as err:
            self.say(f"{self.worker_id}: could not claim: {err}")
        return None

    def _note_unreachable(self, what: str) -> None:
        now = self.monotonic()
        if now - self._last_unreachable_note > 30:
            self._last_unreachable_note = now
            name = self.remote.name if self.remote else "remote"
            self.say(f"{self.worker_id}: the remote {name!r} does not answer: {what}")

    def _claim(self, tx: Tx) -> Claim | None:
        snapshot = self.queue.snapshot()
        if self._take_back_expired(tx, snapshot):
            snapshot = self.queue.snapshot()
        self._warn_invalid(snapshot)
        verdicts = self._assess(snapshot)
        chosen = next((v.job for v in verdicts if v.ready and v.job.id not in self.running), None)
        if chosen is None:
            return None
        job = snapshot.by_id()[chosen.id]
        job, persona, pinned = self._as_profiled(job)
        attempt = job.state.attempt_count + 1
        token = f"{attempt}.{self.worker_id}.{secrets.token_hex(3)}"
        event: dict[str, object] = {
            "ts": iso(self.clock()), "type": CLAIMED, "by": self.worker_id, "from": Stage.INBOX,
            "to": Stage.BUILDING, "attempt": attempt, "token": token,
            "host": socket.gethostname(), "pid": os.getpid(), **pinned,
        }
        if not tx.online:
            event["offline"] = True
        tx.move(job.id, Stage.INBOX, Stage.BUILDING, event)
        return Claim(job, attempt, token, event, claimed_at=self.monotonic(), persona=persona)

    def _assess(self, snapshot: Snapshot) -> list[Verdict]:
        loaded = self.queue.profiles()  # read afresh: the claim pins what it saw
        self._profiles = loaded.found
        for line in loaded.problems:  # a profile that cannot be read (or is a link) is skipped
            self._warn(f"skipping {line}")
        routing = Routing(self._profiles, self.config.engine_classes, self.worker_id,
                          self.config.prefer_window)
        return assess(snapshot.views(), self.clock(), halted=self.queue.halted(),
                      worker_caps=self.capabilities, retry_waits=self._retry_waits(snapshot),
                      routing=routing)

    def _as_profiled(self, job: Job) -> tuple[Job, str | None, dict[str, object]]:
        """The job as this attempt runs it: its profile's defaults applied and its engine class
        resolved to an engine this worker has. Also the persona, and what the claim event
        records (profile name, version and content hash; the engine chosen), so an edit to the
        profile while the job runs does not change this attempt."""
        assert job.manifest is not None
        profile = self._profiles.get(job.manifest.profile) if job.manifest.profile else None
        manifest = apply_profile(job.manifest, profile)
        pinned: dict[str, object] = {}
        if profile is not None:
            pinned["profile"] = {"name": profile.name, "version": profile.version,
                                 "hash": profile.content_hash}
        if manifest.engine is None and manifest.engine_class is not None:
            routing = Routing(self._profiles, self.config.engine_classes)
            engines = routing.engines_of(manifest.engine_class, profile)
            manifest = replace(manifest, engine=choose_engine(manifest.engine_class, engines,
                                                              self.capabilities))
            pinned["engine"] = manifest.engine
        return replace(job, manifest=manifest), profile.persona if profile else None, pinned

    def _retry_waits(self, snapshot: Snapshot) -> dict[str, float] | None:
        """In a fleet, a retry's backoff runs on this machine's monotonic clock from when it first
        saw the retry, not on the finishing worker's wall clock (which may be an hour off)."""
        if self.remote is None:
            return None
        pending = {f"{job.id}:{job.state.attempt_count}": backoff for job in snapshot.jobs
                   if job.stage is Stage.INBOX and (backoff := job.state.retry_backoff) is not None}
        if not pending:
            return {}
        from aq.store.sync import LeaseObserver

        waits = LeaseObserver(self.queue.state_dir / "leases.json").retry_waits(self.monotonic(), pending)
        return {key.rpartition(":")[0]: wait for key, wait in waits.items()}

    def _replay_claim(self, claim: Claim, tx: Tx) -> None:
        """An offline claim, replayed on the remote's tip: it stands only if the job is still waiting."""
        job_id = claim.job.id
        stage = tx.stage_of(job_id)
        if stage is Stage.INBOX:
            tx.move(job_id, Stage.INBOX, Stage.BUILDING, {**claim.event, "replayed": iso(self.clock())})
            return
        self.summary.conflicts.append(job_id)
        self.say(f"{self.worker_id}: {job_id}: ran offline, but it was taken meanwhile (now in {stage}); "
                 "its result is kept as stale_result, not counted")
        tx.append_event(job_id, {
            "ts": iso(self.clock()), "type": NOTE, "by": self.worker_id, "token": claim.token,
            "why": f"offline_conflict: claimed offline by {self.worker_id}, but the job was in {stage} "
                   "on the remote",
        })

    def _settle_uncertain(self) -> None:
        """Start a claim once the remote shows it landed; forget it once it shows it did not."""
        remote = self.remote
        if not self.uncertain or not self.queue.last_sync_ok or remote is None:
            return
        if remote.head() != remote.tip():
            return  # the clone still holds commits the remote has not taken: not the remote's view
        for job_id, claim in list(self.uncertain.items()):
            del self.uncertain[job_id]
            stage = self.queue.stage_of(job_id)
            token = self.queue.state_of(job_id).token
            if stage is Stage.BUILDING and token == claim.token:
                self.say(f"{self.worker_id}: {job_id}: the claim landed after all")
                self._start(claim)
            else:
                self.say(f"{self.worker_id}: {job_id}: the claim did not land; not running it")

    def _take_back_expired(self, tx: Tx, snapshot: Snapshot) -> bool:
        """Move building jobs whose lease expired back to the inbox (or dead_letter). True if any."""
        every = {job.state.token: job for job in snapshot.jobs
                 if job.stage is Stage.BUILDING and job.state.token}
        building = {token: job for token, job in every.items()
                    if job.id not in self.running and job.id not in self.uncertain}
        silence: dict[str, float] = {}
        if not building:
            self._silent_leases = False
            return False
        if self.remote is not None and tx.online:
            # observed for every lease, this worker's own too: what this machine saw is shared
            # by all workers of the clone, and one must not drop another's record of a renewal
            seen, confirmed = self._observe_leases(every)
            silence = {token: s for token, s in seen.items() if token in building}
        else:
            confirmed = set(building)
        # drain waits for a lease that may expire: one it has not yet seen renewed, or one
        # unrenewed for two heartbeats
        self._silent_leases = any(s > 2 * self.heartbeat_interval or token not in confirmed
                                  for token, s in silence.items())
        host = socket.gethostname()
        taken = False
        for token, job in building.items():
            state = job.state
            if state.holder_host == host and state.holder_pid and not proc.pid_alive(state.holder_pid):
                cause = f"worker {state.holder} (pid {state.holder_pid}) on this host is gone"
            elif silence.get(token, 0.0) >= self.lease_ttl:
                cause = (f"no heartbeat from {state.holder} renewed lease {token} for "
                         f"{silence[token]:.0f}s (lease_ttl {self.lease_ttl:.0f}s)")
            else:
                continue
            self._take_back(tx, job, cause)
            taken = True
        return taken

    def _observe_leases(self, building: Mapping[str, Job]) -> tuple[dict[str, float], set[str]]:
        """Each lease's silence and the leases seen renewed, from the heartbeats fetched last.
        Looked up at most every quarter heartbeat interval: in between the last figures are
        aged by the time passed. (A renewal noticed late only makes a lease look younger, so
        this never takes a job back early; it may take one back up to that much later.) A fetch
        that failed since makes them out of date: the outage restarts every lease's silence."""
        now = self.monotonic()
        last = self._leases_seen
        if (last is not None and last[3] == self.queue.fetches_failed
                and now - last[0] < min(self.heartbeat_interval / 4, 5.0)):
            aged = now - last[0]
            return ({token: last[1][token] + aged for token in building if token in last[1]},
                    last[2] & set(building))
        from aq.store.sync import LeaseObserver

        assert self.remote is not None
        observer = LeaseObserver(self.queue.state_dir / "leases.json")
        silence, confirmed = observer.observe(
            self.remote, now, {token: str(job.state.holder) for token, job in building.items()},
            gap=watch_gap(self.lease_ttl, self.poll))
        self._leases_seen = (now, silence, confirmed, self.queue.fetches_failed)
        return silence, confirmed

    def _take_back(self, tx: Tx, job: Job, cause: str) -> None:
        state = job.state
        decision = reclaim_decision("lease_expired", cause, state.reclaims, self.config.max_reclaims)
        log_rel = lost = None
        run_dir = self.queue.running_dir() / job.id
        kill_leftovers(run_dir, state.attempt_count)  # what a dead worker's engine left running here
        spent = live_usage(run_dir, state.attempt_count)  # what it cost, when its meter kept it here
        live = run_dir / f"{state.attempt_count}.log"
        if live.exists():  # what the dead attempt wrote (already scrubbed) is kept, its tail if long
            kept = self.queue.logs_dir(job.id) / f"{state.attempt_count}.log"
            lost = self._write_kept(tx, kept, live.read_bytes()[-self.config.log_max:]
                                    + f"\n[aq] {cause}\n".encode())
            if lost is None:
                log_rel = self.queue.relative(kept)
                shutil.rmtree(run_dir, ignore_errors=True)
            else:  # the live log stays on this machine
                self._warn(f"{job.id}: the log of attempt {state.attempt_count} was not kept ({lost})")
        tx.move(job.id, Stage.BUILDING, decision.to, {
            "ts": iso(self.clock()), "type": FINISHED, "by": self.worker_id, "from": Stage.BUILDING,
            "to": decision.to, "action": decision.action, "attempt": state.attempt_count,
            "token": state.token, "outcome": "lease_expired", "why": decision.reason,
            "reclaim": True, "log": log_rel, **({"log_not_kept": lost} if lost else {}),
            **({"usage": spent.to_event()} if spent is not None else {}),
        })
        self.summary.reclaimed.append(job.id)
        self.courier.moved(job)
        self.say(f"{self.worker_id}: {job.id}: {decision.reason} -> {decision.to}")

    def _warn_invalid(self, snapshot: Snapshot) -> None:
        lines = [job.error for job in snapshot.jobs if job.stage is Stage.INBOX and job.error]
        for line in [*lines, *snapshot.problems]:
            if line:
                self._warn(f"skipping {line}")

    def _warn(self, line: str) -> None:
        """One line on stderr, said once (a transaction replayed does not say it again)."""
        if line not in self._warned:
            self._warned.add(line)
            print(f"aq: {line}", file=sys.stderr, flush=True)

    def _reason(self, err: BaseException) -> str:
        """An error as a short clause: an OS error by the file it is about, without errno."""
        if isinstance(err, OSError) and err.strerror:
            return (f"{self.queue.relative(Path(err.filename))}: {err.strerror}" if err.filename
                    else err.strerror)
        return str(err)

    def _write_kept(self, tx: Tx, path: Path, data: bytes | str) -> str | None:
        """Write a log or artifact into the queue: None, or why it could not be (a folder that
        cannot be written, a link in the way). Recording a result never fails on it."""
        try:
            tx.write(path, data)
        except (AqError, OSError) as err:
            return self._reason(err)
        return None

    # --- running ---------------------------------------------------------------------------

    def _start(self, claim: Claim) -> None:
        self.summary.claimed += 1
        job = claim.job
        self.courier.moved(job, claim.token)
        assert job.manifest is not None  # only valid manifests are ever picked
        self.say(f"{self.worker_id}: claimed {job.id} (attempt {claim.attempt}): {job.manifest.title}")
        plan = AttemptPlan(
            job_id=job.id, attempt=claim.attempt, token=claim.token, worker=self.worker_id,
            manifest=job.manifest, queue_root=self.queue.root,
            run_dir=self.queue.running_dir() / job.id,
            previous_failure=job.state.last_failure_tail, wall_used=job.state.wall_used,
            persona=claim.persona,
            workspaces=(self.config.workspaces_root(self.queue.workspace_key)
                        if self.config.repo_for(job.manifest) else None),
            usd_used=job.state.usd_used, tokens_used=job.state.tokens_used,
            resume=self._session_to_resume(job),
        )
        running = Running(claim, threading.Thread(), threading.Event())
        if self._stopping.is_set():  # a signal landed while this claim was being committed
            self._stopped_gracefully.add(claim.token)
            running.stop_reason = "the worker was told to stop as it claimed the job"
            running.stop.set()
        running.thread = threading.Thread(target=self._attempt, args=(running, plan),
                                          name=f"attempt-{job.id}", daemon=True)
        self.running[job.id] = running
        running.thread.start()
        # the claim commit itself starts the lease: observers count from when they first see it,
        # and the next regular heartbeat renews it
        self._next_refresh = self.monotonic() + self.poll

    def _session_to_resume(self, job: Job) -> tuple[Usage, str] | None:
        """retry-from: session: the last run's agent session and where it lives (host:cwd),
        if it ran on this job's engine on this machine (agent CLIs keep sessions per folder)."""
        manifest, last = job.manifest, job.state.session
        if manifest is None or manifest.retry_from != "session" or last is None:
            return None
        engine, session, usage, where = last
        if engine != self.config.engine_for(manifest) or where.split(":", 1)[0] != socket.gethostname():
            return None
        known = Usage.from_event(usage) or Usage()
        return replace(known, session=session), where.split(":", 1)[1] if ":" in where else ""

    def _attempt(self, running: Running, plan: AttemptPlan) -> None:
        try:
            running.result = execute(plan, self.config, stop=running.stop)
        except Exception as err:  # a bug or an OS failure: recorded as a failed attempt, not lost
            running.result = crashed_attempt(plan, err)
        finally:
            self._wake.set()

    def _reap(self) -> None:
        for job_id, running in list(self.running.items()):
            if running.thread.is_alive():
                continue
            if running.result is None:  # the attempt thread died of a bug: leave the lease to expire
                del self.running[job_id]
                self.say(f"{self.worker_id}: attempt of {job_id} ended without a result")
                continue
            # listed as unrecorded before it leaves running: a heartbeat between the two
            # would otherwise leave its lease out
            self.unrecorded.append((running.claim, running.result, running.stop_reason))
            del self.running[job_id]

    def _watch_cancellations(self) -> None:
        """Stop an attempt whose job left building under us (canceled, or taken by another)."""
        for job_id, running in self.running.items():
            if running.stop.is_set():
                continue
            if not self.queue.job_path(Stage.BUILDING, job_id).exists():
                running.stop_reason = "the job left building while it ran (canceled?)"
                running.stop.set()

    # --- heartbeats ------------------------------------------------------------------------

    def _start_heartbeats(self) -> threading.Thread | None:
        if self.remote is None:
            return None
        thread = threading.Thread(target=self._heartbeats, name="heartbeat", daemon=True)
        thread.start()
        return thread

    def _heartbeats(self) -> None:
        seq = 0
        while True:
            seq += 1
            try:
                self._beat(seq, retiring=self._stopping.is_set() and not self.running)
            except Exception as err:  # the thread must outlive any one beat, or every lease expires
                self.say(f"{self.worker_id}: heartbeat failed: {err!r}; trying again")
            if self._stopping.is_set() and not self.running:
                return
            self._beat_now.wait(timeout=self.heartbeat_interval)
            self._beat_now.clear()

    def _beat(self, seq: int, retiring: bool = False) -> None:
        assert self.remote is not None
        tokens = [r.claim.token for r in list(self.running.values())]
        tokens += [c.token for c in list(self.uncertain.values())]
        tokens += [claim.token for claim, _, _ in list(self.unrecorded)]
        tokens += list(self._unlanded)  # recorded here, owed to the remote: still ours there
        payload = {
            "worker": self.worker_id, "host": socket.gethostname(), "pid": os.getpid(), "seq": seq,
            "wall": iso(self.clock()), "tokens": tokens, "retiring": retiring,
            "capabilities": sorted(self.capabilities or ()),
        }
        started = self.monotonic()
        renewed_before = self._renewed_at
        # a push that hangs must not outlast the renew deadline (the main loop checks it too)
        renewed = self.remote.heartbeat(self.worker_id, payload,
                                        timeout=max(2.0, self.heartbeat_interval),
                                        identity=self.queue.identity or ())
        # silence before this beat counts even if it renewed: a pause (SIGSTOP, a suspended
        # laptop) between renewals may have let observers expire the lease
        self._lose_silent_leases(renewed_before, started)
        if renewed:
            self._renewed_at = started
        else:
            self._lose_silent_leases(renewed_before, self.monotonic())
            silent = self.monotonic() - renewed_before
            if silent >= self.lease_ttl / 2 and (self.running or self.uncertain or self.unrecorded):
                self._note_unreachable(f"no heartbeat has reached it for {silent:.0f}s")

    def _check_renewal(self) -> None:
        """The renew deadline, checked from the main loop as well: the heartbeat thread may be
        stuck in a push that neither lands nor fails. Offline claims count from when the remote
        took them (nothing owed any more)."""
        if self.remote is not None and not self.queue.owed and self.queue.last_push_confirmed:
            for running in list(self.running.values()):
                if running.claim.event.get("offline") and running.landed_at is None:
                    running.landed_at = self.monotonic()
        if self.remote is not None:
            self._lose_silent_leases(self._renewed_at, self.monotonic())

    def _lose_silent_leases(self, renewed_at: float, now: float) -> None:
        """Stop each attempt whose lease went unrenewed for the renew deadline: another machine
        may own the job now. A lease runs from the later of the last renewal and its own claim
        (observers start counting when they first see the claim). A result is recorded only if
        the job is still ours on the remote (the token check fences it)."""
        for running in list(self.running.values()):
            start = running.claim.claimed_at
            if running.claim.event.get("offline"):
                if running.landed_at is None:
                    continue  # the remote has not seen this claim: no one counts it as a lease
                start = running.landed_at  # once it has, it is a lease like any other
            silent = now - max(renewed_at, start)
            if silent >= self.renew_deadline and not running.stop.is_set():
                running.stop_reason = (f"lease lost: no heartbeat reached the remote for "
                                       f"{silent:.0f}s (renew deadline {self.renew_deadline:.0f}s)")
                running.stop.set()
                self._wake.set()

    # --- finishing -------------------------------------------------------------------------

    def _record_unrecorded(self) -> None:
        # entries stay listed until recorded: the heartbeat thread keeps renewing their leases
        for entry in list(self.unrecorded):
            if self._finish(*entry):
                self.unrecorded.remove(entry)

    def _finish(self, claim: Claim, result: AttemptResult, stop_reason: str | None) -> bool:
        """Record the attempt's result, and in the same commit claim the next job when this worker
        will take one: one push per job instead of two. False if the result could not be
        recorded yet (it is tried again)."""
        job_id = claim.job.id
        if not self._work_is_pushed(claim, result):
            return False  # the job waits in building (its lease renewed) until its branch lands
        record = functools.partial(self._record, claim, result, stop_reason)
        claim_next = self._may_claim_after_finish()

        def change(tx: Tx) -> tuple[str | None, Claim | None]:
            moved = record(tx)
            taken = self._claim(tx) if claim_next and (tx.online or self.offline) else None
            return moved, taken

        def owed(done: tuple[str | None, Claim | None]) -> Callable[[Tx], object]:
            taken = done[1]
            if taken is None:
                return record

            def replay(tx: Tx) -> None:
                record(tx)
                self._replay_claim(taken, tx)

            return replay

        message = f"aq: {job_id} attempt {claim.attempt} {result.outcome} by {self.worker_id}"
        try:
            moved, taken = self.queue.transact(
                change, message, owe=owed,
                describe=lambda done: message + (f"; claim {done[1].job.id}" if done[1] else ""))
        except (AqError, OSError) as err:  # the result stays listed and is tried again
            line = f"{self.worker_id}: {job_id}: result not recorded yet ({self._reason(err)}); trying again"
            if line not in self._warned:  # once, not at every turn of the loop
                self._warned.add(line)
                self.say(line)
            return False
        shutil.rmtree(self.queue.running_dir() / job_id, ignore_errors=True)
        if result.workspace is not None:  # the work is on the pushed branch: free the disk
            from aq.infra.repos import remove_workspace

            try:
                remove_workspace(result.workspace)
            except AqError as err:
                self.say(f"{self.worker_id}: {job_id}: worktree not removed ({err}); the next "
                         "worker start here cleans it")
        if self.queue.owed:
            self._unlanded.add(claim.token)
            self._note_unreachable("results are kept and sent when it answers")
        else:
            self._unlanded.clear()
        self.courier.moved(claim.job, claim.token)
        if moved is None:
            self.summary.stale.append(job_id)
            self.say(f"{self.worker_id}: {job_id}: result kept as stale_result (the job is no longer ours)")
        else:
            self.summary.finished[job_id] = moved
            why = self._reasons.pop(job_id, None)
            self.say(f"{self.worker_id}: {job_id}: {result.detail} -> {moved}"
                     + (f" ({why})" if why and result.outcome is not Outcome.OK else ""))
        if taken is not None:
            if self.queue.last_push_confirmed or self.offline:
                self._start(taken)
            else:  # the push was not confirmed: run it only once the remote shows the claim
                self.uncertain[taken.job.id] = taken
        return True

    def _work_is_pushed(self, claim: Claim, result: AttemptResult) -> bool:
        """A job whose attempt succeeded leaves building only once its branch holds the work on
        the repo's remote: push it again now if the attempt's own push failed (at most every
        poll interval), and say why the job waits, once, in its event log."""
        workspace, job_id = result.workspace, claim.job.id
        if workspace is None or result.head is None or self._pushed(result):
            return True
        now = self.monotonic()
        if now < self._push_retry_at.get(claim.token, 0.0):
            return False
        self._push_retry_at[claim.token] = now + min(self.poll, 10.0)
        from aq.infra.repos import push_branch

        reason = "origin's branch has commits this attempt lacks"
        try:
            if push_branch(workspace):
                self._heads_pushed.add(result.head)
                self._push_retry_at.pop(claim.token, None)
                return True
        except AqError as err:
            reason = str(err)
            self.say(f"{self.worker_id}: {job_id}: {err}")
        if result.outcome is not Outcome.OK:
            return True  # a failure moves on; its work stays on the local branch and is rescued
        self._note_unreachable(f"{job_id}'s branch {workspace.branch} is not pushed yet: the job "
                               "stays in building until it is")
        self._note_waiting_push(claim, workspace.branch, reason)
        return False

    def _note_waiting_push(self, claim: Claim, branch: str, reason: str) -> None:
        """The job's state says why it stays in building: one note event per attempt."""
        if claim.token in self._push_noted:
            return
        event = {"ts": iso(self.clock()), "type": NOTE, "by": self.worker_id, "token": claim.token,
                 "attempt": claim.attempt, "waiting": "branch_push",
                 "why": f"waiting for branch {branch} to reach the repo's remote ({reason}); the "
                        "job stays in building, its lease renewed, until the push succeeds"}
        try:
            def note(tx: Tx) -> None:
                tx.append_event(claim.job.id, event)

            self.queue.transact(note, f"aq: {claim.job.id} waits for its branch push",
                                owe=lambda _: note)
            self._push_noted.add(claim.token)
        except AqError as err:
            self.say(f"{self.worker_id}: {claim.job.id}: could not note the wait ({err})")

    def _pushed(self, result: AttemptResult) -> bool:
        return result.pushed or result.head in self._heads_pushed

    def _may_claim_after_finish(self) -> bool:
        if self._stopping.is_set() or self.mode == "once":
            return False
        return len(self.running) + len(self.uncertain) < self.max_jobs

    def _flush_owed(self) -> None:
        """Before exiting, give work owed to the remote a few chances to land, and tracker
        posts a while to go out."""
        if not self.courier.flush(timeout=COURIER_FLUSH):  # first: its records are owed work too
            self.say(f"{self.worker_id}: tracker posts still on their way; what does not arrive "
                     "stays owed ('aq to-tracker' sends it)")
        self._flush_results()

    def _flush_results(self) -> None:
        for attempt in range(5):
            if not self.queue.owed:
                return
            try:
                self.queue.transact(lambda tx: None, "aq: flush")
            except AqError:
                time.sleep(min(2.0, 0.2 * 2 ** attempt))
        if self.queue.owed:
            self.say(f"{self.worker_id}: {len(self.queue.owed)} result(s) not yet on the remote; they "
                     "are committed in this clone and are sent by the next 'aq run' here")

    def _record(self, claim: Claim, result: AttemptResult, stop_reason: str | None, tx: Tx
                ) -> str | None:
        job_id, manifest = claim.job.id, claim.job.manifest
        assert manifest is not None
        now = self.clock()
        stage, state = tx.stage_of(job_id), tx.state(job_id)
        if stage is not None and any(a.token == claim.token and a.outcome == result.outcome
                                     and a.worker == self.worker_id for a in state.attempts):
            # this very result is recorded already (salvaged, or a push we could not confirm
            # did land); a lease taken back from us has another outcome and is fenced below
            return str(stage)
        if (stage is not Stage.BUILDING or state.token != claim.token) and has_stale_result(
                self.queue.read_events(job_id), claim.token):
            return None  # fenced, and kept as stale already (a salvage of our commit did it)
        log_rel, log_lost = self._keep_log(tx, job_id, claim.attempt, result)
        lost = {"log_not_kept": log_lost} if log_lost else {}  # the event says why, not the log
        if stage is not Stage.BUILDING or state.token != claim.token:
            tx.append_event(job_id, {
                "ts": iso(now), "type": STALE_RESULT, "by": self.worker_id, "attempt": claim.attempt,
                "token": claim.token, "outcome": result.outcome, "log": log_rel, **lost,
                **usage_fields(result),
                "why": f"fenced: the job is in {stage or 'no stage'}"
                       + ("" if state.token == claim.token else " under another lease"),
            })
            return None
        fingerprint = (failure_fingerprint(result.outcome, result.tail)
                       if result.outcome not in (Outcome.OK, Outcome.INTERRUPTED) else None)
        decision = self._decide(claim, result, stop_reason, fingerprint, state.retries_used,
                                state.last_fingerprint, state.reclaims, now)
        # earlier attempts' count too, unless this one judged the job's whole branch against base
        outside = (set(result.out_of_scope) if result.scope_against_base
                   else {*state.out_of_scope, *result.out_of_scope})
        if outside and decision.action is Action.AUTOSHIP:  # a person looks first
            decision = Decision(Action.PASS, Stage.TESTING,
                                f"verify passed; not shipped by review-policy auto: "
                                f"{len(outside)} file(s) changed outside allowed-scope")
        artifacts = self._keep_artifacts(tx, job_id, claim.attempt, result, manifest)
        tx.move(job_id, Stage.BUILDING, decision.to, {
            "ts": iso(now), "type": FINISHED, "by": self.worker_id, "from": Stage.BUILDING,
            "to": decision.to, "action": decision.action, "attempt": claim.attempt,
            "token": claim.token, "outcome": result.outcome, "exit_code": result.exit_code,
            "verify_exit": result.verify_exit, "detail": result.detail, "why": decision.reason,
            "not_before": iso(decision.not_before) if decision.not_before else None,
            "backoff": (round((decision.not_before - now).total_seconds(), 3)
                        if decision.not_before else None),
            "fingerprint": fingerprint, "tail": result.tail or None, "log": log_rel, **lost,
            "artifacts": artifacts, "duration": round(result.duration, 3),
            "reclaim": result.outcome is Outcome.INTERRUPTED,
            # a person stopped the worker: not counted toward max_reclaims (counts_as_reclaim)
            **({"graceful": True} if result.outcome is Outcome.INTERRUPTED
               and claim.token in self._stopped_gracefully else {}),
            **usage_fields(result),
            **({"out_of_scope": list(result.out_of_scope)} if result.out_of_scope else {}),
            **({"scope": "branch"} if result.scope_against_base else {}),
            **({"branch": result.workspace.branch, "base": result.workspace.base,
                "head": result.head, "pushed": self._pushed(result)} if result.workspace else {}),
        })
        if result.usage is not None:
            self._halt_if_over_budget(tx, now)
        self._reasons[job_id] = decision.reason  # for the line that says where the job went
        return str(decision.to)

    def _halt_if_over_budget(self, tx: Tx, now: datetime) -> None:
        """aq.yaml `budget:` crossed by today's runs: halt the queue for a person to resume."""
        config = self.config
        if config.budget_usd_per_day is None and config.budget_tokens_per_day is None:
            return
        if self.queue.halted() is not None:
            return
        day = iso(now)[:10]
        usd, tokens = day_spend((job.state for job in self.queue.snapshot().jobs), day)
        why = queue_budget_crossed(config, usd, tokens, day)
        if why is not None:
            tx.write(self.queue.qdir / HALT_FILE, f"{why}\nby {self.worker_id} at {iso(now)}\n")
            self.say(f"{self.worker_id}: queue halted: {why}")

    def _decide(self, claim: Claim, result: AttemptResult, stop_reason: str | None,
                fingerprint: str | None, retries_used: int, last_fingerprint: str | None,
                reclaims: int, now: datetime) -> Decision:
        manifest = claim.job.manifest
        assert manifest is not None
        return decide(
            result.outcome, verified=result.verified,
            review_policy=manifest.review_policy or "manual",
            retry=self.config.retry_rule(manifest), retries_used=retries_used,
            fingerprint=fingerprint, last_fingerprint=last_fingerprint,
            reclaims=reclaims, max_reclaims=self.config.max_reclaims, now=now,
            stop_reason=stop_reason, graceful=claim.token in self._stopped_gracefully,
        )

    def _keep_log(self, tx: Tx, job_id: str, attempt: int, result: AttemptResult
                  ) -> tuple[str | None, str | None]:
        """Copy the capped, scrubbed log into queue/.logs/<id>/<n>.log (or .stale-<x>.log): its
        path, or None and why it could not be written. A lost log never loses the result."""
        path = self.queue.logs_dir(job_id) / f"{attempt}.log"
        if path.exists():  # a fenced duplicate must not overwrite the log of record
            path = path.with_name(f"{attempt}.stale-{secrets.token_hex(2)}.log")
        lost = self._write_kept(tx, path, result.log_text)
        if lost is not None:
            self._warn(f"{job_id}: the log of attempt {attempt} was not kept ({lost}); the result "
                       "is recorded without it")
            return None, lost
        return self.queue.relative(path), None

    def _keep_artifacts(self, tx: Tx, job_id: str, attempt: int, result: AttemptResult,
                        manifest: Manifest) -> list[str]:
        """Copy the attempt's artifacts to queue/.logs/<id>/<n>/, text scrubbed, within artifact_max."""
        if not result.artifacts or result.cwd is None:
            return []
        from aq.core.scrub import Scrubber
        from aq.trackers.base import secret_names

        spec = self.config.engines.get(self.config.engine_for(manifest))
        scrubber = Scrubber({**os.environ, **(spec.env if spec else {})},
                            secret_names(self.config.trackers))
        target = self.queue.logs_dir(job_id) / str(attempt)
        kept: list[str] = []
        budget = self.config.artifact_max
        for path in result.artifacts:
            try:  # looked at again: a link put in its way since the attempt is refused
                data = read_file(result.cwd, path, where="the job's cwd")
            except (AqError, OSError) as err:
                self._warn(f"{job_id}: artifact {path.name} not kept ({self._reason(err)})")
                continue
            if len(data) > budget:
                self.say(f"{self.worker_id}: {job_id}: artifact {path.name} skipped: over artifact_max")
                continue
            # surrogateescape keeps every byte as it was, except what the scrubber replaces
            data = scrubber.text(data.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")
            budget -= len(data)
            # a file's name can hold a secret too: the kept copy's path is scrubbed like its text
            dest = target / scrubber.line(str(path.relative_to(result.cwd)))
            lost = self._write_kept(tx, dest, data)
            if lost is not None:
                self._warn(f"{job_id}: artifact {path.name} not kept ({lost})")
                continue
            kept.append(self.queue.relative(dest))
        return kept
