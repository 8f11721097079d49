"""Tracker items in as jobs (`aq from-tracker`), once or on watch.

Idempotent: an item's reference (`tracker-item`) finds the job it made, so a second import
changes nothing, or updates a job still waiting in the inbox.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aq.core.events import added, iso, updated_from_tracker
from aq.core.ids import new_job_id
from aq.core.lifecycle import Stage
from aq.core.manifest import Manifest, content_key, parse_manifest, render_manifest
from aq.errors import AqError, ManifestError, UsageError
from aq.store.queue import Queue
from aq.store.snapshot import Job, Snapshot
from aq.store.tx import Tx
from aq.trackers import open_tracker
from aq.trackers.base import Item, TrackerError, our_priority, parse_ref
from aq.usecases.jobs import check_names
from aq.usecases.tracker_delivery import Trackers

LABEL_KEYS = {"profile": "profile", "priority": "priority", "engine": "engine", "lock": "lock"}


def job_fields(item: Item) -> dict[str, Any]:
    """The manifest keys an item sets: its title and reference; labels profile:<name>,
    priority:<p>, cap:<c>, engine:<e>, lock:<l>; else the tracker's own priority."""
    fields: dict[str, Any] = {"title": " ".join(item.title.split()) or str(item.ref)}
    caps: list[str] = []
    for label in item.labels:
        name, sep, value = label.partition(":")
        name, value = name.strip().lower(), value.strip()
        if not sep or not value:
            continue
        if name == "cap":
            caps.append(value)
        elif name == "priority":  # its words too: priority:urgent, priority:P1
            fields["priority"] = our_priority(value) or value.lower()
        elif name in LABEL_KEYS:
            fields[LABEL_KEYS[name]] = value
    if "priority" not in fields and item.priority:
        fields["priority"] = item.priority
    if caps:
        fields["capabilities"] = sorted(set(caps))
    fields["tracker-item"] = str(item.ref)
    return fields


_FROM_LABELS = {*LABEL_KEYS.values(), "capabilities"}


def item_text(item: Item, queue: Queue | None = None) -> tuple[str, Manifest]:
    """The job file an item makes, and its manifest (an error names the item, and its labels
    when they set the key); given the `queue`, the engine and profile its labels name must be
    there, as `aq add` checks."""
    fields = job_fields(item)
    text = render_manifest(fields, item.body.strip() or item.title.strip() or str(item.ref))
    try:
        manifest = parse_manifest("imported-job", text, str(item.ref))
        if queue is not None:
            check_names(queue, fields, str(item.ref))
    except ManifestError as err:
        where = "the item's labels: fix them" if err.key in _FROM_LABELS else "the item: fix it"
        raise ManifestError(str(item.ref), f"{err.problem} (from {where} in the tracker)",
                            err.key) from None
    return text, manifest


@dataclass(frozen=True, slots=True)
class Imported:
    ref: str
    outcome: str  # added, updated, unchanged, started, closed, failed
    message: str
    job_id: str | None = None
    stage: str | None = None

    @property
    def failed(self) -> bool:
        return self.outcome == "failed"


def linked_job(snapshot: Snapshot, ref: str) -> Job | None:
    """The newest job made from the item (a --new import makes a second one)."""
    linked = [job for job in snapshot.jobs if job.manifest and job.manifest.tracker_item == ref]
    return max(linked, key=lambda job: (job.state.added_at or "", job.id), default=None)


def import_item(queue: Queue, item: Item, *, now: datetime, who: str, entropy: int,
                new: bool = False) -> Imported:
    """Make a job from the item; or, if one was made already: nothing when the content is the
    same, an update while it still waits in the inbox, else a report of where it is."""
    ids = itertools.count(entropy)
    return import_items(queue, [item], now=now, who=who, entropy=lambda: next(ids), new=new)[0]


def import_items(queue: Queue, items: Sequence[Item], *, now: datetime, who: str,
                 entropy: Callable[[], int], new: bool = False) -> list[Imported]:
    """`import_item` for several items in one transaction (one commit and push, not one per
    item). An item that cannot be a job (a bad label) fails alone; an item listed twice is
    imported once."""
    results: dict[int, Imported] = {}
    ready: list[tuple[int, Item, str, Manifest]] = []
    seen: set[str] = set()
    snapshot = queue.snapshot()
    for index, item in enumerate(items):
        if str(item.ref) in seen:
            results[index] = Imported(str(item.ref), "unchanged", f"{item.ref}: listed twice; imported once")
            continue
        seen.add(str(item.ref))
        # names are checked as aq add checks them only for a job to be made: a closed item or
        # one imported already is reported as before, whatever its labels say now
        making = item.open and (new or linked_job(snapshot, str(item.ref)) is None)
        try:
            ready.append((index, item, *item_text(item, queue if making else None)))
        except AqError as err:  # a ManifestError names the item itself
            results[index] = Imported(str(item.ref), "failed", str(err))

    def change(tx: Tx) -> dict[int, Imported]:
        snapshot = queue.snapshot()  # on the remote's tip, under the lock
        return {index: _import(tx, queue, snapshot, item, text, manifest, now=now, who=who,
                               new=new, entropy=entropy)
                for index, item, text, manifest in ready}

    def describe(done: dict[int, Imported]) -> str:
        changed = [f"{r.ref} ({r.outcome} {r.job_id})" for r in done.values()
                   if r.outcome in ("added", "updated")]
        return f"aq: import {', '.join(changed[:5])}{' …' if len(changed) > 5 else ''} by {who}"

    if ready:
        try:
            done: dict[int, Imported] = queue.transact(change, f"aq: import by {who}", describe)
            results.update(done)
        except AqError as err:  # the remote did not answer, ...: nothing was imported
            results.update({index: Imported(str(item.ref), "failed", f"{item.ref}: {err}")
                            for index, item, _, _ in ready})
    return [results[index] for index in range(len(items))]


def _import(tx: Tx, queue: Queue, snapshot: Snapshot, item: Item, text: str, manifest: Manifest,
            *, now: datetime, who: str, new: bool, entropy: Callable[[], int]) -> Imported:
    ref = str(item.ref)
    existing = linked_job(snapshot, ref)
    if not item.open and not new:
        closed = f"{ref} is {item.status or 'closed'} in the tracker"
        if existing is None:
            return Imported(ref, "closed", f"{closed}: nothing imported (pass --new to import "
                            "it anyway)")
        stage = tx.stage_of(existing.id)
        return Imported(ref, "closed", f"{closed}; its job {existing.id} is in {stage}: nothing "
                        "changed", existing.id, stage)
    if existing is not None and not new:
        return _again(tx, existing, manifest, text, ref, now, who)
    chosen = new_job_id(manifest.title, entropy())
    while tx.stage_of(chosen) is not None:
        chosen = new_job_id(manifest.title, entropy())
    event = added(iso(now), who, tracker_item=ref)
    if existing is not None:
        event["also"] = existing.id  # --new: the item's earlier job
    tx.append_event(chosen, event)
    tx.write(queue.job_path(Stage.INBOX, chosen), text)
    return Imported(ref, "added", f"{ref} -> added {chosen}", chosen, Stage.INBOX)


def _again(tx: Tx, job: Job, manifest: Manifest, text: str, ref: str, now: datetime,
           who: str) -> Imported:
    assert job.manifest is not None
    stage = tx.stage_of(job.id)
    if content_key(job.manifest) == content_key(manifest):
        return Imported(ref, "unchanged", f"{ref} is job {job.id} ({stage}), imported already "
                        "with this content: nothing changed", job.id, stage)
    if stage is Stage.INBOX and not tx.state(job.id).attempts:  # one that ran is started
        tx.write(job.path, text)
        tx.append_event(job.id, updated_from_tracker(iso(now), who, ref,
                                                     job.manifest.content_hash[:12]))
        return Imported(ref, "updated", f"{ref} -> updated {job.id} (still in the inbox)",
                        job.id, stage)
    tried = len(tx.state(job.id).attempts)
    return Imported(ref, "started", f"{ref} changed, but its job {job.id} has started ({stage}, "
                    f"{tried} attempt(s)): nothing changed (pass --new for a new job linked to "
                    "the same item)", job.id, stage)


def import_refs(queue: Queue, refs: Sequence[str], *, now: datetime, who: str,
                entropy: Callable[[], int], new: bool, env: Mapping[str, str]) -> list[Imported]:
    """`aq from-tracker REF...`: each item read from its tracker, then all imported at once."""
    parsed = [parse_ref(text) for text in refs]  # every one checked before anything is imported
    read: dict[int, Item] = {}
    results: dict[int, Imported] = {}
    trackers = Trackers(queue, env)  # one adapter per tracker: gh auth token asked once
    for index, ref in enumerate(parsed):
        try:
            read[index] = trackers(ref).fetch(ref)
        except TrackerError as err:
            results[index] = Imported(str(ref), "failed", str(err))
        except AqError as err:
            results[index] = Imported(str(ref), "failed", f"{ref}: {err}")
    imported = import_items(queue, list(read.values()), now=now, who=who, entropy=entropy, new=new)
    results.update(zip(read, imported, strict=True))
    return [results[index] for index in range(len(parsed))]


def import_query(queue: Queue, query: str, *, label: str | None, now: datetime, who: str,
                 entropy: Callable[[], int], new: bool, env: Mapping[str, str]) -> list[Imported]:
    """Every item a tracker query returns: `github:OWNER/REPO [search words]`,
    `backlog[:search words]`, `cmd:NAME[:query]`."""
    kind, _, rest = query.partition(":")
    adapter = ""
    if kind == "cmd":
        adapter, _, rest = rest.partition(":")
    elif kind not in ("github", "backlog"):
        raise UsageError(f"{query!r} is not a tracker query: expected github:OWNER/REPO, "
                         "backlog or cmd:NAME[:QUERY]")
    tracker = open_tracker(queue.config.trackers, kind, adapter, queue.root, env)
    return import_items(queue, tracker.query(rest, label), now=now, who=who, entropy=entropy,
                        new=new)


def import_named(queue: Queue, refs: Sequence[str], query: str | None, *, label: str | None,
                 now: datetime, who: str, entropy: Callable[[], int], new: bool,
                 env: Mapping[str, str]) -> list[Imported]:
    """`aq from-tracker [REF...] [--query QUERY]`: the items named, then those the query returns."""
    results = import_refs(queue, refs, now=now, who=who, entropy=entropy, new=new, env=env)
    if query:
        results += import_query(queue, query, label=label, now=now, who=who, entropy=entropy,
                                new=new, env=env)
    return results


def watch_imports(queue: Queue, refs: Sequence[str], query: str | None, *, label: str | None,
                  every: float, clock: Callable[[], datetime], who: str,
                  entropy: Callable[[], int], new: bool, env: Mapping[str, str],
                  sleep: Callable[[float], None] = time.sleep,
                  stop: Callable[[], bool] = lambda: False) -> Iterator[list[Imported]]:
    """`--watch`: `import_named` every `every` seconds until `stop()`, yielding after each look
    its news: what it has not said before (an item imported already, unchanged, is no news). A
    query that fails is a failed result of its look, and the watch goes on."""
    said: set[str] = set()
    while True:
        moment = clock()
        results = import_refs(queue, refs, now=moment, who=who, entropy=entropy, new=new, env=env)
        if query:
            try:
                results += import_query(queue, query, label=label, now=moment, who=who,
                                        entropy=entropy, new=new, env=env)
            except AqError as err:
                results.append(Imported(query, "failed", str(err)))
        news = [r for r in results if r.outcome != "unchanged" and r.message not in said]
        said.update(r.message for r in news)
        yield news
        new = False  # --new makes one job per item, not one per look
        if stop():
            return
        sleep(every)
