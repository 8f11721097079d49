"""Events: the append-only record of a job, and the fold that gives its current state.

An event is a flat JSON object: `ts` (UTC ISO-8601), `type`, `by` (worker or user@host),
`from`/`to` for moves, `why`, and type-specific fields. The state of a job is its stage folder
plus `fold(events)`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from aq.core.durations import MAX_SIZE
from aq.core.lifecycle import Stage

Event = dict[str, Any]

# event types
ADDED = "added"
CLAIMED = "claimed"
FINISHED = "finished"  # a worker's attempt ended and moved the job
MOVED = "moved"  # a person's move: promote, ship, reject, requeue, cancel
STALE_RESULT = "stale_result"
NOTE = "note"
RESCUED = "rescued"  # a killed worker's unpushed work, put on a branch
UPDATED = "updated_from_tracker"  # an inbox job's file changed to its tracker item's new text
POSTING = "tracker_posting"  # a post to a tracker item, held by one sender (or let go)
POSTED = "tracker_posted"  # that post sent


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def time_or_none(text: str | None) -> datetime | None:
    """A time from an event; an unreadable one counts as absent (`aq lint` reports it)."""
    if not text:
        return None
    try:
        return parse_iso(text)
    except (ValueError, TypeError):
        return None


# --- events as written: each type's fields in one order (people read the JSON lines) -----------

def added(ts: str, by: str, **extra: Any) -> Event:
    """A job added to the inbox; `extra` after (its idempotency key, its tracker item...)."""
    return {"ts": ts, "type": ADDED, "by": by, "to": Stage.INBOX, **extra}


def claimed(ts: str, by: str, attempt: int, token: str, **extra: Any) -> Event:
    """A claim: inbox -> building under a fresh lease `token`; `extra`: host, pid, what it pins."""
    return {"ts": ts, "type": CLAIMED, "by": by, "from": Stage.INBOX, "to": Stage.BUILDING,
            "attempt": attempt, "token": token, **extra}


def finished(ts: str, by: str, to: str, action: str, attempt: int, token: str | None,
             outcome: str, **extra: Any) -> Event:
    """An attempt's end, moving its job out of building (its result, or a lease taken back)."""
    return {"ts": ts, "type": FINISHED, "by": by, "from": Stage.BUILDING, "to": to,
            "action": action, "attempt": attempt, "token": token, "outcome": outcome, **extra}


def stale_result(ts: object, by: object, attempt: object, token: object, outcome: object,
                 log: object, **extra: Any) -> Event:
    """A result fenced (the job is no longer under its lease): kept, moving nothing. (Its
    fields may be a salvaged `finished` event's, as that event had them.)"""
    return {"ts": ts, "type": STALE_RESULT, "by": by, "attempt": attempt, "token": token,
            "outcome": outcome, "log": log, **extra}


def moved(ts: str, by: str, source: str, target: str, action: str, why: str,
          **extra: Any) -> Event:
    """A person's move of a job from stage `source` to `target`."""
    return {"ts": ts, "type": MOVED, "by": by, "from": source, "to": target, "action": action,
            "why": why, **extra}


def note(ts: str, by: str, token: str, **extra: Any) -> Event:
    """A note on a job under lease `token` (why it waits, a conflict); moves nothing."""
    return {"ts": ts, "type": NOTE, "by": by, "token": token, **extra}


def rescued(ts: str, by: str, branch: str, why: str) -> Event:
    """Work a killed worker left unpushed, now on the pushed `branch`."""
    return {"ts": ts, "type": RESCUED, "by": by, "branch": branch, "why": why}


def updated_from_tracker(ts: str, by: str, ref: str, from_hash: str) -> Event:
    """An inbox job's file rewritten from its tracker item `ref`; `from_hash`: the text before."""
    return {"ts": ts, "type": UPDATED, "by": by, "tracker_item": ref, "from_hash": from_hash}


def tracker_posting(ts: str, by: str, run: str | None, key: str, ref: str,
                    **extra: Any) -> Event:
    """Post `key` to tracker item `ref` held by `by` in `run`; `extra`: released, when let go."""
    return {"ts": ts, "type": POSTING, "by": by, "run": run, "for": key, "ref": ref, **extra}


def tracker_posted(ts: str, by: str, key: str, ref: str, **extra: Any) -> Event:
    """Post `key` sent to tracker item `ref`; `extra`: its url, when the tracker gave one."""
    return {"ts": ts, "type": POSTED, "by": by, "for": key, "ref": ref, **extra}


@dataclass(frozen=True, slots=True)
class Attempt:
    number: int
    worker: str
    token: str
    started: str
    outcome: str | None = None
    verify_exit: int | None = None
    finished: str | None = None
    log: str | None = None
    artifacts: tuple[str, ...] = ()
    reason: str | None = None
    engine: str | None = None
    usage: dict[str, Any] | None = None  # what the engine reported (aq.core.usage.Usage.to_event)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), tuple(getattr(self, name) for name in _FIELD_NAMES[type(self)]))


@dataclass(frozen=True, slots=True)
class JobState:
    attempts: tuple[Attempt, ...] = ()
    token: str | None = None  # lease token of the current claim
    holder: str | None = None
    holder_host: str | None = None
    holder_pid: int | None = None
    added_at: str | None = None
    not_before: str | None = None  # a retry's earliest start, on the finishing worker's clock
    retry_backoff: float | None = None  # that retry's wait in seconds, for clocks of other machines
    retries_used: int = 0  # retried failures since the job was added or last requeued
    last_fingerprint: str | None = None
    last_failure_tail: str | None = None
    last_outcome: str | None = None
    reclaims: int = 0
    last_reason: str | None = None
    events: int = 0
    wall_used: float = 0.0  # seconds of attempts, for budget.wall
    out_of_scope: tuple[str, ...] = ()  # changed outside allowed-scope by any attempt since added/requeued
    branch: str | None = None  # a job with a repo: its branch, as the last attempt left it
    branch_head: str | None = None
    branch_pushed: bool = False
    usd_used: float = 0.0  # what attempts since added/requeued cost (fenced ones too): budget.usd
    tokens_used: int = 0  # likewise for budget.tokens
    # the last finished run's (engine, session, usage, where: "host:cwd" its session lives in)
    session: tuple[str, str, dict[str, Any], str] | None = None
    # its engine's work is done and it waited for its children: the next attempt runs only its
    # verify (kept through a take-back of that attempt; a retry, a requeue or a cancel ends it)
    awaiting_children: bool = False
    review_asks: int = 0  # reviews that asked for changes since added or last requeued
    moved_at: str | None = None  # the `ts` of the last event that moved it (one with a `to`)

    @property
    def attempt_count(self) -> int:
        return len(self.attempts)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), tuple(getattr(self, name) for name in _FIELD_NAMES[type(self)]))


# Cached by the thousand: see aq.core.manifest._FIELD_NAMES.
_FIELD_NAMES: dict[type, tuple[str, ...]] = {
    cls: tuple(f.name for f in fields(cls)) for cls in (Attempt, JobState)
}


def fold(events: Iterable[Event]) -> JobState:
    """The current state of a job from its events, oldest first. Unknown types are kept, not
    fatal; a field of another type than aq writes (an event edited by hand) is read as absent."""
    folding = _Folding()
    for event in events:
        folding.events += 1
        kind = event.get("type")
        if "to" in event and isinstance(event.get("ts"), str):
            folding.moved_at = event["ts"]
        if kind in (FINISHED, STALE_RESULT) and isinstance(event.get("usage"), dict):
            folding.spend(kind, event)
        if kind == ADDED:
            folding.added_at = folding.added_at or _text(event.get("ts"))
        elif kind == CLAIMED:
            folding.claim(event)
        elif kind == FINISHED:
            folding.finish(event)
        elif kind == MOVED:
            folding.move(event)
    return folding.state()


@dataclass(slots=True)
class _Folding:
    """A job's state while `fold` reads its events: JobState's fields, changed in place."""

    attempts: list[Attempt] = field(default_factory=list)
    token: str | None = None
    holder: str | None = None
    holder_host: str | None = None
    holder_pid: int | None = None
    added_at: str | None = None
    not_before: str | None = None
    retry_backoff: float | None = None
    retries_used: int = 0
    last_fingerprint: str | None = None
    last_failure_tail: str | None = None
    last_outcome: str | None = None
    reclaims: int = 0
    last_reason: str | None = None
    events: int = 0
    wall_used: float = 0.0
    out_of_scope: tuple[str, ...] = ()
    branch: str | None = None
    branch_head: object = None  # JobState keeps it only when it is a string
    branch_pushed: bool = False
    usd_used: float = 0.0
    tokens_used: int = 0
    session: tuple[str, str, dict[str, Any], str] | None = None
    awaiting_children: bool = False
    review_asks: int = 0
    moved_at: str | None = None

    def spend(self, kind: object, event: Event) -> None:
        """What a finished (or fenced) attempt's engine used; a finished one's session."""
        usage = event["usage"]
        self.usd_used += _number(usage.get("cost_usd"))
        self.tokens_used += int(min(sum(_number(usage.get(key)) for key in TOKEN_KEYS), MAX_SIZE))
        if kind == FINISHED and usage.get("session") and event.get("engine"):
            total = event.get("session_usage")
            where = event.get("session_where")  # host:cwd the session lives in
            self.session = (str(event["engine"]), str(usage["session"]),
                            total if isinstance(total, dict) else usage,
                            str(where) if isinstance(where, str) else "")

    def claim(self, event: Event) -> None:
        self.token, self.holder = _text(event.get("token")), _text(event.get("by"))
        self.holder_host, self.holder_pid = _text(event.get("host")), _count(event.get("pid"))
        number = _count(event.get("attempt"))
        self.attempts.append(Attempt(
            number=number if number is not None else len(self.attempts) + 1,
            worker=str(self.holder), token=str(self.token), started=str(event.get("ts")),
        ))
        self.not_before, self.retry_backoff = None, None

    def finish(self, event: Event) -> None:
        # a failed attempt's stray file is still there for the retry, which sees it as dirty
        # before it started: every attempt's count until a person requeues the job
        found = _texts(event.get("out_of_scope"))
        # a job's branch judged as a whole against base (scope: branch) replaces the count
        self.out_of_scope = (found if event.get("scope") == "branch"
                             else tuple(dict.fromkeys((*self.out_of_scope, *found))))
        if event.get("branch"):
            self.branch, self.branch_head = str(event["branch"]), _text(event.get("head"))
            self.branch_pushed = bool(event.get("pushed"))
        if self.attempts and self.attempts[-1].token == event.get("token"):
            self.attempts[-1] = _finish(self.attempts[-1], event)
        self.wall_used += _number(event.get("duration"))
        self.token = self.holder = self.holder_host = self.holder_pid = None
        self.not_before = _text(event.get("not_before"))
        wait = event.get("backoff")
        self.retry_backoff = _number(wait) if isinstance(wait, int | float) and self.not_before \
            else None
        self.last_outcome, self.last_reason = _text(event.get("outcome")), _text(event.get("why"))
        if event.get("action") == "retry" and event.get("outcome") != "review_changes":
            self.retries_used += 1  # a review's request for changes has review.max_rounds
        if event.get("outcome") == "review_changes":
            self.review_asks += 1
        if event.get("action") == "await":
            self.awaiting_children = True
        elif not counts_as_reclaim(event) and event.get("outcome") != "interrupted":
            self.awaiting_children = False
        self.reclaims += counts_as_reclaim(event)
        if event.get("outcome") not in (None, "ok", "interrupted", "awaiting_children"):
            self.last_fingerprint = _text(event.get("fingerprint"))
            self.last_failure_tail = _text(event.get("tail"))

    def move(self, event: Event) -> None:
        self.last_reason = _text(event.get("why")) or self.last_reason
        if event.get("action") == "cancel" and self.token is not None:
            self.token = self.holder = self.holder_host = self.holder_pid = None
        if event.get("action") in ("requeue", "cancel"):
            self.awaiting_children = False
        if event.get("action") == "requeue":
            self.review_asks = 0
            self.retries_used, self.reclaims, self.last_fingerprint = 0, 0, None
            self.not_before, self.retry_backoff = None, None
            self.usd_used, self.tokens_used = 0.0, 0  # a person chose to spend more on it
            self.out_of_scope = ()

    def state(self) -> JobState:
        return JobState(
            attempts=tuple(self.attempts), token=self.token, holder=self.holder,
            holder_host=self.holder_host, holder_pid=self.holder_pid, added_at=self.added_at,
            not_before=self.not_before, retry_backoff=self.retry_backoff,
            retries_used=self.retries_used, last_fingerprint=self.last_fingerprint,
            last_failure_tail=self.last_failure_tail, last_outcome=self.last_outcome,
            reclaims=self.reclaims, last_reason=self.last_reason, events=self.events,
            wall_used=self.wall_used, out_of_scope=self.out_of_scope, branch=self.branch,
            branch_head=self.branch_head if isinstance(self.branch_head, str) else None,
            branch_pushed=self.branch_pushed, usd_used=self.usd_used,
            tokens_used=self.tokens_used, session=self.session,
            awaiting_children=self.awaiting_children, review_asks=self.review_asks,
            moved_at=self.moved_at,
        )


def counts_as_reclaim(event: Event) -> bool:
    """Whether a `finished` event counts toward max_reclaims: a job taken back from its worker
    (lease expired, or the worker stopped it), unless a person stopped the worker gracefully
    (TERM, Ctrl-C: `graceful`), which is never the job's doing."""
    taken_back = event.get("action") == "reclaim" or bool(event.get("reclaim"))
    return taken_back and not event.get("graceful")


def _finish(attempt: Attempt, event: Event) -> Attempt:
    return Attempt(
        number=attempt.number, worker=attempt.worker, token=attempt.token, started=attempt.started,
        outcome=_text(event.get("outcome")), verify_exit=_count(event.get("verify_exit")),
        finished=_text(event.get("ts")), log=_text(event.get("log")),
        artifacts=_texts(event.get("artifacts")), reason=_text(event.get("why")),
        engine=_text(event.get("engine")),
        usage=event.get("usage") if isinstance(event.get("usage"), dict) else None,
    )


TOKEN_KEYS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


def _number(value: object) -> float:
    """A count or an amount from an event; anything else (a hand-edited event) counts 0."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e300:
        return 0.0  # NaN fails the comparison too
    return float(value)


def _text(value: object) -> str | None:
    """A text field of an event: a value of another type (edited by hand) is read as none."""
    return value if isinstance(value, str) else None


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _texts(value: object) -> tuple[str, ...]:
    """A list of paths or names in an event; its items that are text."""
    if not isinstance(value, list | tuple):
        return ()
    return tuple(item for item in value if isinstance(item, str))
