"""The tracker bridge: items in as jobs (`aq from-tracker`), each job's moves back out as posts
(`aq to-tracker`, and workers as they move jobs).

Idempotent both ways. An item's reference (`tracker-item`) finds the job it made, so a second
import changes nothing or updates a job still waiting. Every move of a linked job owes its item
one post; a `tracker_posted` event naming the move settles it, so a retry or another machine
never sends it again. Who sends a post: the process that made the move, at once; if it did not
(its tracker was down, it died), anyone after `trackers.takeover`, having first pushed a
`tracker_posting` event for it (push is compare-and-swap: one machine wins). Adapters that can
read comments back (GitHub, Backlog.md) also skip a comment they find already there, which
covers a crash between sending and recording.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aq.core.events import ADDED, CLAIMED, FINISHED, MOVED, Event, iso, parse_iso
from aq.core.ids import new_job_id
from aq.core.lifecycle import Stage
from aq.core.manifest import Manifest, content_key, parse_manifest, render_manifest
from aq.errors import AqError, ManifestError
from aq.store.queue import Job, Queue, Snapshot, Tx
from aq.trackers import open_tracker
from aq.trackers.base import (
    DONE,
    IN_PROGRESS,
    Item,
    Post,
    Ref,
    Tracker,
    TrackerError,
    our_priority,
    parse_ref,
)

UPDATED = "updated_from_tracker"
POSTED = "tracker_posted"
POSTING = "tracker_posting"
LABEL_KEYS = {"profile": "profile", "priority": "priority", "engine": "engine", "lock": "lock"}


# --- in: items become jobs -------------------------------------------------------------------

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


def item_text(item: Item) -> tuple[str, Manifest]:
    """The job file an item makes, and its manifest (a bad label is an error naming the item)."""
    text = render_manifest(job_fields(item), item.body.strip() or item.title.strip() or str(item.ref))
    try:
        return text, parse_manifest("imported-job", text, str(item.ref))
    except ManifestError as err:
        raise ManifestError(str(item.ref), f"{err.problem} (from the item's labels: fix them in "
                            "the tracker)", err.key) from None


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
    for index, item in enumerate(items):
        if str(item.ref) in seen:
            results[index] = Imported(str(item.ref), "unchanged", f"{item.ref}: listed twice; imported once")
            continue
        seen.add(str(item.ref))
        try:
            ready.append((index, item, *item_text(item)))
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
    event: Event = {"ts": iso(now), "type": ADDED, "by": who, "to": Stage.INBOX, "tracker_item": ref}
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
        tx.append_event(job.id, {"ts": iso(now), "type": UPDATED, "by": who, "tracker_item": ref,
                                 "from_hash": job.manifest.content_hash[:12]})
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
        from aq.errors import UsageError

        raise UsageError(f"{query!r} is not a tracker query: expected github:OWNER/REPO, "
                         "backlog or cmd:NAME[:QUERY]")
    tracker = open_tracker(queue.config.trackers, kind, adapter, queue.root, env)
    return import_items(queue, tracker.query(rest, label), now=now, who=who, entropy=entropy,
                        new=new)


# --- out: moves become posts -----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class OwedPost:
    job_id: str
    ref: str
    key: str
    post: Post
    owner: str  # who holds it: its mover, or who took it over ("" once let go: anyone's)
    since: str  # since when (ISO time, on the holder's clock)
    order: int  # the move's place in the job's log: a job's posts go out in this order
    run: str | None = None  # the run that took it over (None: its mover has it still)
    token: str | None = None  # the move's lease token (a worker's moves): whose move it is

    @property
    def free(self) -> bool:
        return self.owner == ""


# what names a move for its post: the same when a worker replays its move after the remote
# was away (a replay takes a new time and adds `replayed`)
_MOVE_FIELDS = ("type", "token", "attempt", "from", "to", "action", "outcome", "by")


def post_key(job_id: str, event: Event) -> str:
    """Names one move of one job, the same on every machine and across replays."""
    named = {field: event.get(field) for field in _MOVE_FIELDS}
    if not event.get("token"):
        named["ts"] = event.get("ts")  # a person's move: pushed at once, never replayed
    text = json.dumps(named, sort_keys=True, default=str)
    return hashlib.sha256(f"{job_id}\n{text}".encode()).hexdigest()[:16]


def _posted(events: Sequence[Event], key: str) -> bool:
    return any(e.get("type") == POSTED and e.get("for") == key for e in events)


def _holder(events: Sequence[Event], key: str) -> Event | None:
    """The post's latest claim, if any ("released": let go)."""
    claims = [e for e in events if e.get("type") == POSTING and e.get("for") == key]
    return claims[-1] if claims else None


def owed_posts(job: Job, events: Sequence[Event], scrub: Callable[[str], str] = lambda t: t
               ) -> list[OwedPost]:
    """The posts a linked job's moves still owe its item, oldest first."""
    ref = job.manifest.tracker_item if job.manifest else None
    if not ref:
        return []
    moves = [(order, event) for order, event in enumerate(events)
             if event.get("type") in (CLAIMED, FINISHED, MOVED) and event.get("to")]
    posts = {order: compose(job, event, scrub) for order, event in moves}
    # a status goes only with the job's latest move that sets one, sent or not: a late "in
    # progress" must not undo a "done", and a late claim still marks the item in progress
    last_status = max((order for order, post in posts.items() if post.status), default=None)
    posted = {e.get("for") for e in events if e.get("type") == POSTED}
    holders = {e.get("for"): e for e in events if e.get("type") == POSTING}  # the latest wins
    owed = []
    for order, event in moves:
        key = post_key(job.id, event)
        if key in posted:
            continue
        post = posts[order]
        if post.status and order != last_status:
            post = Post(post.key, post.comment)
        holder = holders.get(key)
        owner: object
        since: object
        run: object
        if holder is not None and holder.get("released"):
            owner, since, run = "", holder.get("ts"), None
        elif holder is not None:
            owner, since, run = holder.get("by"), holder.get("ts"), holder.get("run")
        else:
            owner, since, run = event.get("by"), event.get("ts"), None
        owed.append(OwedPost(job.id, ref, key, post, str(owner or ""), str(since), order,
                             str(run) if run else None,
                             str(event["token"]) if event.get("token") else None))
    return owed


def compose(job: Job, event: Event, scrub: Callable[[str], str] = lambda t: t) -> Post:
    """What a move says to the item: one comment, and the item's status where it changes."""
    name = f"aq job `{job.id}`"
    by, to, attempt = event.get("by"), event.get("to"), event.get("attempt")
    why = scrub(str(event.get("why") or ""))
    if event.get("type") == CLAIMED:
        chosen = event.get("engine") or (job.manifest.engine if job.manifest else None)
        engine = f" (engine {chosen})" if chosen else ""
        return Post("", f"{name}: building, attempt {attempt}, by worker `{by}`{engine}.", IN_PROGRESS)
    if to == Stage.SHIPPED:
        return Post("", f"{name}: shipped by {by}. {_shipped(job, event)}".rstrip(), DONE)
    if event.get("type") == MOVED:
        return Post("", f"{name}: {event.get('action')} by {by}: now in {to}"
                    + (f" ({why})." if why and why != f"{event.get('action')} by {by}" else "."))
    if to in (Stage.REVIEW, Stage.TESTING):
        return Post("", f"{name}: attempt {attempt} finished; {_verify(event)}; now in {to}"
                    + (", waiting for a person to ship it." if to == Stage.REVIEW
                       else ", ready to ship.") + _branch(event))
    tail = scrub(str(event.get("tail") or "")).strip()
    tail_lines = "\n".join(tail.splitlines()[-20:])[-2000:]
    block = f"\n\nLog tail (attempt {attempt}):\n```\n{tail_lines.replace('```', '`` `')}\n```" if tail else ""
    if to == Stage.INBOX:
        return Post("", f"{name}: attempt {attempt} did not finish ({event.get('outcome')}): {why}; "
                    f"back in the inbox.{block}")
    return Post("", f"{name}: attempt {attempt} failed ({event.get('outcome')}): {why}; now in "
                f"{to}, left for a person.{block}")


def _verify(event: Event) -> str:
    code = event.get("verify_exit")
    return "no verify command" if code is None else (
        "verify passed" if code == 0 else f"verify failed (exit {code})")


def _branch(event: Event) -> str:
    if not event.get("branch"):
        return ""
    head = str(event.get("head") or "")[:12]
    return f" Branch `{event['branch']}`" + (f" at {head}" if head else "") + "."


def _shipped(job: Job, event: Event) -> str:
    parts = []
    finished = next((a for a in reversed(job.state.attempts) if a.outcome), None)
    if event.get("merged"):
        parts.append(f"Merged `{event.get('branch')}` into `{event.get('base')}` ({str(event['merged'])[:12]}).")
    elif event.get("pr"):
        parts.append(f"Pull request: {event['pr']}.")
    elif job.state.branch:
        head = (job.state.branch_head or "")[:12]
        parts.append(f"Branch `{job.state.branch}`" + (f" at {head}." if head else "."))
    if finished is not None:
        parts.append(f"Attempt {finished.number}: " + _verify({"verify_exit": finished.verify_exit}) + ".")
    return " ".join(parts)


@dataclass(frozen=True, slots=True)
class Sent:
    job_id: str
    ref: str
    key: str
    ok: bool
    message: str
    url: str | None = None
    retry: bool = True
    everywhere: bool = False  # the tracker refused for a reason no item of it escapes (no token)


@dataclass(frozen=True, slots=True)
class OwedReport:
    sent: tuple[Sent, ...]
    waiting: tuple[OwedPost, ...]  # owed, but its mover may still send it


def linked_jobs(queue: Queue, refs: Iterable[str] | None) -> list[Job]:
    """The jobs linked to a tracker item: all, or those named (refused if one is not linked)."""
    snapshot = queue.snapshot()
    if refs is None:
        return [job for job in snapshot.jobs if job.manifest and job.manifest.tracker_item]
    jobs = [queue.resolve(ref, snapshot) for ref in refs]
    for job in jobs:
        if not (job.manifest and job.manifest.tracker_item):
            raise AqError(f"{job.id} is not linked to a tracker item (no tracker-item): "
                          "nothing to send")
    return jobs


Age = Callable[[OwedPost], float]  # seconds a post has been with its holder
DELIVER_WITHIN = 60.0  # a command's posts stop being started after this (the rest stays owed)


def wall_age(now: datetime) -> Age:
    """A post's age on the wall clocks: the holder's time against `now`. Good enough for a
    person's `aq to-tracker`; a worker measures on its own clock (see courier.Sightings)."""
    def age(owed: OwedPost) -> float:
        try:
            return (now - parse_iso(owed.since)).total_seconds()
        except ValueError:
            return float("inf")
    return age


def posts_due(queue: Queue, jobs: Iterable[Job], *, me: str, run: str, age: Age,
              takeover: float, env: Mapping[str, str], own: Collection[str] = ()
              ) -> tuple[list[OwedPost], list[OwedPost], list[OwedPost]]:
    """Owed posts split three ways: to send now, to claim first, to wait for.

    Sent now: what this `run` claimed less than half `takeover` ago, and the posts of moves
    made under the lease tokens in `own` (a worker's own claims: no other process has them,
    whatever its name) as young.
    Claimed first (a `tracker_posting` event, pushed: one process wins): a person's own moves
    (processes of one `user@host` are many), posts let go, posts whose holder kept them past
    `takeover`, and this run's own grown old (renewed, so no one else takes them meanwhile).
    What they quote is scrubbed of the secrets in `env` once more."""
    from aq.core.scrub import Scrubber
    from aq.trackers.base import secret_names

    scrub = Scrubber(env, secret_names(queue.config.trackers)).text
    ready: list[OwedPost] = []
    claim: list[OwedPost] = []
    waiting: list[OwedPost] = []
    for job in jobs:
        for owed in owed_posts(job, queue.read_events(job.id), scrub):
            mine = held_by(owed, me, run, own)
            if mine and age(owed) < takeover / 2:
                ready.append(owed)
            elif mine or owed.free or _persons_own(owed, me) or age(owed) >= takeover:
                claim.append(owed)
            else:
                waiting.append(owed)
    return ready, claim, waiting


def held_by(owed: OwedPost, me: str, run: str, own: Collection[str]) -> bool:
    """The post is this `run`'s: it claimed it, or (a worker) made its move under one of its
    own lease tokens and no one has claimed it since."""
    return owed.run == run or (owed.run is None and owed.owner == me and owed.token in own)


def _persons_own(owed: OwedPost, me: str) -> bool:
    """A move `me` made as a person (no lease token): any process of theirs may claim it. A
    worker's move is its own only by its token, never by a name another may share."""
    return owed.owner == me and owed.run is None and owed.token is None


def take_over(queue: Queue, posts: Sequence[OwedPost], *, me: str, run: str, age: Age,
              takeover: float, now: datetime, own: Collection[str] = ()) -> list[OwedPost]:
    """Push a `tracker_posting` event naming `run` for each post (one transaction), each
    checked again on the remote's tip as `posts_due` classed it; returns those this run won.
    A post sent meanwhile, or held by another run for less than `takeover`, is left alone."""
    if not posts:
        return []

    def change(tx: Tx) -> list[OwedPost]:
        snapshot = queue.snapshot()  # on the remote's tip, under the lock
        current: dict[str, OwedPost] = {}
        for job_id in dict.fromkeys(owed.job_id for owed in posts):
            job = queue.resolve(job_id, snapshot)
            current.update({o.key: o for o in owed_posts(job, queue.read_events(job_id))})
        won = []
        for owed in posts:
            now_owed = current.get(owed.key)
            if now_owed is None:
                continue  # sent meanwhile
            ours = held_by(now_owed, me, run, own) or _persons_own(now_owed, me)
            if not (ours or now_owed.free or age(now_owed) >= takeover):
                continue  # another's, and live
            tx.append_event(owed.job_id, {"ts": iso(now), "type": POSTING, "by": me, "run": run,
                                          "for": owed.key, "ref": owed.ref})
            won.append(owed)
        return won

    return queue.transact(change, f"aq: claim tracker posts by {me}")


def new_run(me: str) -> str:
    """A name for one run of a command, unique even among processes of one user@host."""
    import os
    import secrets

    return f"{me}/{os.getpid()}/{secrets.token_hex(3)}"


def send(trackers: Callable[[Ref], Tracker], posts: Sequence[OwedPost], *,
         deadline: float | None = None, monotonic: Callable[[], float] = time.monotonic
         ) -> list[Sent]:
    """Send posts in order; a job whose post fails sends none of its later ones this time (its
    item must not read 'done' before 'in progress'). None is started after `deadline` (on
    `monotonic`): a claim must not grow old while its post waits its turn."""
    results: list[Sent] = []
    stuck: set[str] = set()
    for owed in sorted(posts, key=lambda p: (p.job_id, p.order)):
        if owed.job_id in stuck:
            continue
        if deadline is not None and monotonic() > deadline:
            results.append(Sent(owed.job_id, owed.ref, owed.key, False,
                                f"{owed.ref}: not sent yet (its turn came too late)"))
            continue
        post = Post(owed.key, owed.post.comment, owed.post.status)
        try:
            ref = parse_ref(owed.ref)
            url = trackers(ref).post(ref, post)
        except Exception as err:  # an adapter's bug too fails this post, not those sent already
            stuck.add(owed.job_id)
            results.append(_failed(owed, err))
            continue
        results.append(Sent(owed.job_id, owed.ref, owed.key, True, f"{owed.ref}: sent {owed.job_id}'s "
                            f"{_what(owed.post)}", url))
    return results


def _failed(owed: OwedPost, err: Exception) -> Sent:
    if isinstance(err, TrackerError):
        return Sent(owed.job_id, owed.ref, owed.key, False, str(err), retry=err.retry,
                    everywhere=err.everywhere)
    said = str(err) if isinstance(err, AqError) else \
        f"the tracker adapter failed ({err.__class__.__name__})"
    return Sent(owed.job_id, owed.ref, owed.key, False, f"{owed.ref}: {said}",
                retry=not isinstance(err, AqError))


def _what(post: Post) -> str:
    return {IN_PROGRESS: "start", DONE: "ship"}.get(post.status or "", "update")


def record_sent(queue: Queue, sent: Sequence[Sent], *, who: str, now: datetime,
                owe: bool = True, let_go: Sequence[OwedPost] = (), run: str | None = None) -> None:
    """One transaction: a `tracker_posted` event for every post that went out, and the
    `let_go` posts that did not released (held by `me`/`run`, now anyone's to send at once).
    Offline, it is owed and replayed."""
    done = [s for s in sent if s.ok]
    went = {s.key for s in done}
    release = [owed for owed in let_go if owed.key not in went]
    if not done and not release:
        return

    def change(tx: Tx) -> None:
        for item in done:
            if _posted(queue.read_events(item.job_id), item.key):
                continue
            event: Event = {"ts": iso(now), "type": POSTED, "by": who, "for": item.key,
                            "ref": item.ref}
            if item.url:
                event["url"] = item.url
            tx.append_event(item.job_id, event)
        for owed in release:
            events = queue.read_events(owed.job_id)
            holder = _holder(events, owed.key)
            held = (holder.get("run") == run and not holder.get("released")) if holder \
                else owed.owner == who
            if held and not _posted(events, owed.key):
                tx.append_event(owed.job_id, {"ts": iso(now), "type": POSTING, "by": who,
                                              "run": run, "for": owed.key, "ref": owed.ref,
                                              "released": True})

    queue.transact(change, f"aq: record tracker posts by {who}",
                   owe=(lambda _: change) if owe else None)


class Trackers:
    """Adapters opened once per kind and reused (from any thread: settings are read at once)."""

    def __init__(self, queue: Queue, env: Mapping[str, str]) -> None:
        self.settings = queue.config.trackers
        self.root = queue.root
        self.env = env
        self._open: dict[tuple[str, str], Tracker] = {}

    def __call__(self, ref: Ref) -> Tracker:
        key = (ref.kind, ref.adapter)
        if key not in self._open:
            self._open[key] = open_tracker(self.settings, ref.kind, ref.adapter, self.root, self.env)
        return self._open[key]


def deliver(queue: Queue, ready: Sequence[OwedPost], claim: Sequence[OwedPost], *, me: str,
            run: str, age: Age, now: datetime, env: Mapping[str, str]) -> list[Sent]:
    """Claim what needs claiming, send in order, record what went out and let go of what did
    not. A record that fails is said, not raised: what went out is found by its marker."""
    takeover = queue.config.trackers.takeover
    won = take_over(queue, claim, me=me, run=run, age=age, takeover=takeover, now=now)
    sent: list[Sent] = []
    try:
        sent = send(Trackers(queue, env), [*ready, *won],
                    deadline=time.monotonic() + min(max(takeover / 4, 10.0), DELIVER_WITHIN))
    finally:  # also on Ctrl-C: what did not go out is let go, for anyone to send at once
        _record_or_say(queue, sent, me=me, run=run, now=now, let_go=[*ready, *won])
    return sent


def _record_or_say(queue: Queue, sent: list[Sent], *, me: str, run: str, now: datetime,
                   let_go: Sequence[OwedPost]) -> None:
    try:
        record_sent(queue, sent, who=me, now=now, owe=False, let_go=let_go, run=run)
    except AqError as err:
        sent.append(Sent("", "", "", False, f"tracker: sent, but not recorded ({err}); GitHub "
                         "and Backlog.md find what went out, a command tracker may get it again",
                         retry=False))


def to_tracker(queue: Queue, refs: Sequence[str] | None, *, me: str, now: datetime,
               env: Mapping[str, str]) -> OwedReport:
    """`aq to-tracker`: send what the jobs still owe their items, each post claimed first. A
    person's own moves and posts let go are claimed at once; others' once their holder kept
    them past `trackers.takeover` (on the wall clocks); the rest is reported, not sent."""
    queue.refresh_from_remote()  # what is owed is what the remote says
    run, age = new_run(me), wall_age(now)
    ready, claim, waiting = posts_due(queue, linked_jobs(queue, refs), me=me, run=run, age=age,
                                      takeover=queue.config.trackers.takeover, env=env)
    sent = deliver(queue, ready, claim, me=me, run=run, age=age, now=now, env=env)
    return OwedReport(tuple(sent), tuple(waiting))


def post_moves(queue: Queue, job_ids: Sequence[str], *, me: str, now: datetime,
               env: Mapping[str, str], wait: float = 5.0,
               monotonic: Callable[[], float] = time.monotonic,
               sleep: Callable[[float], None] = time.sleep) -> list[Sent]:
    """After a person's move (ship, reject, ...): send what the move owes, as its mover. While
    another still holds posts of the job's earlier moves (its worker sending them), wait up to
    `wait` seconds, so the item reads the moves in order; a post let go (its worker ended
    without sending it) is claimed and sent first. Failure is reported, never raised: the move
    stands and the post stays owed."""
    run, age = new_run(me), wall_age(now)
    try:
        snapshot = queue.snapshot()
        jobs = [job for job in (queue.resolve(ref, snapshot) for ref in job_ids)
                if job.manifest and job.manifest.tracker_item]
        if not jobs:
            return []
        end = monotonic() + wait
        while True:
            # others' posts are never taken by age here: a person's clock is no worker's
            ready, claim, waiting = posts_due(queue, jobs, me=me, run=run, age=age,
                                              takeover=float("inf"), env=env)
            first = {p.job_id: p.order for p in reversed(claim)}
            if not any(p.order < first.get(p.job_id, -1) for p in waiting) or monotonic() >= end:
                break
            sleep(1.0)
            queue.refresh_from_remote()
            jobs = linked_jobs(queue, [job.id for job in jobs])
        return deliver(queue, ready, claim, me=me, run=run, age=age, now=now, env=env)
    except Exception as err:  # the move stands whatever the tracker (or its adapter) did
        reason = str(err) if isinstance(err, AqError) else err.__class__.__name__
        return [Sent(job_id, "", "", False, f"tracker: {reason}") for job_id in job_ids]
