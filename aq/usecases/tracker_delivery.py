"""Each job's moves out to its tracker item as posts (`aq to-tracker`, a person's move, and
workers as they move jobs).

Every move of a linked job owes its item one post (`aq.usecases.tracker_posts`); a
`tracker_posted` event naming the move settles it, so a retry or another machine never sends it
again. Who sends a post: the process that made the move, at once; if it did not (its tracker was
down, it died), anyone after `trackers.takeover`, having first pushed a `tracker_posting` event
for it (push is compare-and-swap: one machine wins). Adapters that can read comments back
(GitHub, Backlog.md) also skip a comment they find already there, which covers a crash between
sending and recording.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from aq.core.events import iso, parse_iso, tracker_posted, tracker_posting
from aq.core.scrub import Scrubber
from aq.errors import AqError, NotApplicable
from aq.store.queue import Queue
from aq.store.snapshot import Job
from aq.store.tx import Tx
from aq.trackers import open_tracker
from aq.trackers.base import Post, Ref, Tracker, TrackerError, parse_ref
from aq.trackers.settings import DONE, IN_PROGRESS, secret_names
from aq.usecases.tracker_posts import OwedPost, is_posted, latest_claim, owed_posts


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
            raise NotApplicable(f"{job.id} is not linked to a tracker item (no tracker-item): "
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
            tx.append_event(owed.job_id, tracker_posting(iso(now), me, run, owed.key, owed.ref))
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
            if is_posted(queue.read_events(item.job_id), item.key):
                continue
            event = tracker_posted(iso(now), who, item.key, item.ref)
            if item.url:
                event["url"] = item.url
            tx.append_event(item.job_id, event)
        for owed in release:
            events = queue.read_events(owed.job_id)
            holder = latest_claim(events, owed.key)
            held = (holder.get("run") == run and not holder.get("released")) if holder \
                else owed.owner == who
            if held and not is_posted(events, owed.key):
                tx.append_event(owed.job_id, tracker_posting(iso(now), who, run, owed.key,
                                                             owed.ref, released=True))

    queue.transact(change, f"aq: record tracker posts by {who}",
                   replay=(lambda _: change) if owe else None)


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
        jobs = [job for job in (queue.resolve(ref) for ref in job_ids)  # each read alone
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
