"""aq.yaml's hooks, fired by the moves of jobs and by alerts, and their `hook` events.

Every move of a job (a person's promote, ship, reject, requeue or cancel, a worker's result, a
claim, a lease taken back) is one `Tx.move` inside `Queue.transact_synced`: that is the one
place hooks are fired from. `MoveHooks.watch` notes the moves of the run of the change that was
committed (a change lost to another machine's push is run again, and only its last run
counts); once the lock is let go, `fire` runs the hook of each move's new stage, as the worker
or person who made the move. A hook's run never changes the move, and never raises.

Recording without a push of its own: a hook's outcome is known only after the move's commit
(and push), so its event cannot be in that commit, and a commit of its own would be one more
push per hook in a fleet that shares a budget of pushes (a forge allows a few a minute). So the
`hook` event waits in this clone's state folder (hooks-pending.jsonl) and rides with the next
transaction that commits anything on this clone: appended to the job's event log in that same
commit, it leaves the waiting list once that commit is on the remote (a ride that did not land
is made again; an event is never appended twice). A queue with no remote has no push to spare,
and commits its hook events at once.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from aq.core.events import Event, iso
from aq.core.lifecycle import Stage
from aq.errors import AqError
from aq.infra.files import write_atomic
from aq.infra.hooks import HookRun, HookSettings, run_hook
from aq.store.layout import Layout
from aq.store.snapshot import read_job

if TYPE_CHECKING:
    from aq.core.manifest import Manifest
    from aq.store.config import QueueConfig
    from aq.store.local import Local
    from aq.store.tx import Tx

T = TypeVar("T")
HOOK = "hook"  # the event type of a hook's run
PENDING = "hooks-pending.jsonl"  # in the state folder: hook events waiting for a commit to ride


def say(line: str) -> None:
    """A hook that did not succeed, in one line on stderr: the move itself went through."""
    print(f"aq: {line}", file=sys.stderr)


def hook_event(ts: str, by: object, run: HookRun, **extra: Any) -> Event:
    """The `hook` event of one run: which hook, its exit code (or "timeout"), how long it took
    and its last line on stderr; `id` tells a copy of it from another run. (No `to`: a hook
    moves nothing.)"""
    return {"ts": ts, "type": HOOK, "by": by, **run.fields(), **extra,
            "id": uuid.uuid4().hex[:16]}


class Outbox:
    """Hook events waiting in this clone's state folder for a commit to ride with. Read and
    written only under the queue lock."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> list[tuple[str, Event]]:
        """(job id, event) of each waiting hook event, oldest first; a torn line skipped."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except (FileNotFoundError, UnicodeDecodeError):
            return []
        waiting = []
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and isinstance(entry.get("job"), str) \
                    and isinstance(entry.get("event"), dict):
                waiting.append((entry["job"], entry["event"]))
        return waiting

    def add(self, entries: list[tuple[str, Event]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = "".join(json.dumps({"job": job_id, "event": event}, ensure_ascii=False,
                                   default=str) + "\n" for job_id, event in entries)
        with open(self.path, "a", encoding="utf-8") as out:
            out.write(lines)

    def drop(self, ids: set[str]) -> None:
        """Forget the events whose ids are given (they are on the remote now)."""
        kept = [(job_id, event) for job_id, event in self.read() if event.get("id") not in ids]
        if not kept:
            self.path.unlink(missing_ok=True)
            return
        write_atomic(self.path, "".join(json.dumps({"job": job_id, "event": event},
                                                   ensure_ascii=False, default=str) + "\n"
                                        for job_id, event in kept))


def ride(outbox: Outbox, tx: Tx) -> set[str]:
    """Append the waiting hook events to their jobs' logs in `tx`: the ids of those now in it
    (or of a job no stage folder holds any more, whose event is let go). Never raises: a
    hook's record must not cost the change it rides with."""
    rode: set[str] = set()
    try:
        for job_id, event in outbox.read():
            if tx.stage_of(job_id) is not None and not any(
                    old.get("type") == HOOK and old.get("id") == event.get("id")
                    for old in tx.events(job_id)):
                tx.append_event(job_id, event)
            rode.add(str(event.get("id")))
    except (AqError, OSError, ValueError):
        pass
    return rode


class MoveHooks:
    """One transaction's moves and the hooks they fire (see the module's docstring)."""

    def __init__(self, layout: Layout, settings: HookSettings, local: Local, *, alone: bool,
                 clock: Callable[[], datetime], warn: Callable[[str], None] = say) -> None:
        self.layout = layout
        self.settings = settings
        self.local = local
        self.alone = alone  # no remote: hook events are committed at once
        self.clock = clock
        self.warn = warn
        self.outbox = Outbox(layout.state_dir / PENDING)
        self.moves: list[tuple[str, Stage, Stage, Event]] = []
        self.rode: set[str] = set()

    def watch(self, change: Callable[[Tx], T]) -> Callable[[Tx], T]:
        """`change`, noting the moves it made and taking the waiting hook events along when it
        commits anything (online: work kept offline is replayed later, without them)."""
        def watched(tx: Tx) -> T:
            result = change(tx)
            self.moves = [move for move in tx.moves if move[2] in self.settings.on_stage]
            self.rode = ride(self.outbox, tx) if tx.touched and tx.online else set()
            return result

        return watched

    def settle(self, confirmed: bool) -> None:
        """Under the lock, after the transaction: the hook events that rode in a commit the
        remote has (or, with none, in a commit) wait no more."""
        if confirmed and self.rode:
            self.outbox.drop(self.rode)

    def fire(self) -> list[HookRun]:
        """After the lock is let go: each move's hook, one after another; their events wait for
        a commit to ride with (committed at once with no remote)."""
        runs, events = [], []
        for job_id, source, target, event in self.moves:
            run = self._run(job_id, source, target, event)
            runs.append(run)
            events.append((job_id, hook_event(iso(self.clock()), event.get("by"), run,
                                              stage=str(target), moved_at=event.get("ts"))))
        if events:
            self._keep(events)
        return runs

    def _run(self, job_id: str, source: Stage, target: Stage, event: Event) -> HookRun:
        hook = f"on_stage.{target}"
        try:
            job = read_job(self.layout, job_id)
        except (AqError, OSError, ValueError):
            job = None
        manifest = job.manifest if job is not None else None
        payload = stage_payload(self.layout.root, hook, job_id, source, target, event, manifest)
        env = {"AQ_HOOK": hook, "AQ_EVENT": str(event.get("type", "")), "AQ_JOB_ID": job_id,
               "AQ_STAGE": str(target), "AQ_FROM_STAGE": str(source),
               "AQ_TITLE": str(payload["title"]), "AQ_QUEUE": str(self.layout.root)}
        run = run_hook(hook, self.settings.on_stage[target], payload, env, cwd=self.layout.root,
                       timeout=self.settings.timeout)
        complaint = run.complaint(self.settings.timeout)
        if complaint is not None:
            self.warn(complaint)
        return run

    def _keep(self, events: list[tuple[str, Event]]) -> None:
        """The hook events put in the outbox; with no remote, committed at once."""
        try:
            with self.local.lock():
                self.outbox.add(events)
                if self.alone:
                    rode: set[str] = set()

                    def record(tx: Tx) -> None:
                        rode.update(ride(self.outbox, tx))

                    self.local.apply(record, f"aq: {len(events)} hook run(s) recorded", None,
                                     exact=False)
                    self.outbox.drop(rode)
        except (AqError, OSError) as err:  # the next transaction takes them along
            self.warn(f"hook events not recorded yet ({err})")


def stage_payload(root: Path, hook: str, job_id: str, source: Stage, target: Stage,
                  event: Event, manifest: Manifest | None) -> dict[str, Any]:
    """What a stage hook reads on stdin: the move, the job's main fields, and `text`, a line a
    notification can show as it is."""
    title = manifest.title if manifest is not None else job_id
    why = event.get("why") or event.get("detail") or event.get("outcome") or ""
    text = f"aq: {job_id} {source} -> {target}" + (f" ({why})" if why else "") + f": {title}"
    fields = {}
    if manifest is not None:
        fields = {key: value for key, value in (
            ("priority", manifest.priority), ("engine", manifest.engine),
            ("profile", manifest.profile), ("lock", manifest.lock),
            ("tracker-item", manifest.tracker_item), ("repo", manifest.repo),
            ("parent", manifest.parent)) if value is not None}
    return {"hook": hook, "text": text, "job": job_id, "title": title, "from": str(source),
            "to": str(target), "by": event.get("by"), "why": why, "queue": str(root),
            "event": dict(event), "manifest": fields}


def run_alert_hook(config: QueueConfig, alert: Mapping[str, Any], now: datetime, *, root: Path,
                   warn: Callable[[str], None] = say) -> HookRun | None:
    """Run aq.yaml's `hooks.on_alert` for `alert` (a flat mapping: its `kind`, and `job`,
    `why`, `text` when it has them), as the worker that raised it: the run (None without an
    on_alert hook). Never raises; a hook that failed is said in one line. Recording it is the
    caller's: `hook_event(iso(now), by, run, alert=kind)` is its event."""
    settings = config.hooks
    if settings is None or settings.on_alert is None:
        return None
    kind = str(alert.get("kind") or alert.get("type") or "alert")
    job = alert.get("job") or alert.get("job_id")
    why = alert.get("why") or alert.get("reason") or ""
    text = str(alert.get("text") or (f"aq alert {kind}" + (f" on {job}" if job else "")
                                     + (f": {why}" if why else "")))
    payload = {"hook": "on_alert", "text": text, "kind": kind, "job": job, "ts": iso(now),
               "queue": str(root), "alert": dict(alert)}
    env = {"AQ_HOOK": "on_alert", "AQ_EVENT": "alert", "AQ_ALERT": kind, "AQ_QUEUE": str(root),
           **({"AQ_JOB_ID": str(job)} if job else {})}
    run = run_hook("on_alert", settings.on_alert, payload, env, cwd=root, timeout=settings.timeout)
    complaint = run.complaint(settings.timeout)
    if complaint is not None:
        warn(complaint)
    return run


def wanted(layout: Layout, settings: HookSettings | None) -> bool:
    """Whether a transaction needs watching: hooks are set, or events of earlier ones wait."""
    return settings is not None or os.path.exists(layout.state_dir / PENDING)
