"""What a linked job's moves owe its tracker item: one post per move (a comment, and a status
where it changes), named by a key that is the same on every machine and across replays.

A `tracker_posted` event naming the key settles a post; a `tracker_posting` event says who holds
it to send (see `aq.usecases.tracker_delivery`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aq.core.events import CLAIMED, FINISHED, MOVED, POSTED, POSTING, Event
from aq.core.lifecycle import Stage
from aq.store.snapshot import Job
from aq.trackers.base import Post
from aq.trackers.settings import DONE, IN_PROGRESS


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


def is_posted(events: Sequence[Event], key: str) -> bool:
    return any(e.get("type") == POSTED and e.get("for") == key for e in events)


def latest_claim(events: Sequence[Event], key: str) -> Event | None:
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
