"""Events: the append-only record of a job, and the fold that gives its current state.

An event is a flat JSON object: `ts` (UTC ISO-8601), `type`, `by` (worker or user@host),
`from`/`to` for moves, `why`, and type-specific fields. The state of a job is its stage folder
plus `fold(events)`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

Event = dict[str, Any]

# event types
ADDED = "added"
CLAIMED = "claimed"
FINISHED = "finished"  # a worker's attempt ended and moved the job
MOVED = "moved"  # a person's move: promote, ship, reject, requeue, cancel
STALE_RESULT = "stale_result"
NOTE = "note"


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


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
    usage: dict[str, Any] | None = None  # what the engine reported (aq.infra.usage.Usage.to_event)

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
    """The current state of a job from its events, oldest first. Unknown types are kept, not fatal."""
    attempts: list[Attempt] = []
    token = holder = added_at = not_before = last_fp = last_tail = last_outcome = last_reason = None
    holder_host: str | None = None
    holder_pid: int | None = None
    retries_used = reclaims = count = 0
    wall_used = 0.0
    backoff: float | None = None
    outside: tuple[str, ...] = ()
    branch: str | None = None
    branch_head: str | None = None
    branch_pushed = False
    usd_used, tokens_used = 0.0, 0
    session: tuple[str, str, dict[str, Any], str] | None = None
    for event in events:
        count += 1
        kind = event.get("type")
        if kind in (FINISHED, STALE_RESULT) and isinstance(event.get("usage"), dict):
            usage = event["usage"]
            usd_used += _number(usage.get("cost_usd"))
            tokens_used += int(sum(_number(usage.get(key)) for key in TOKEN_KEYS))
            if kind == FINISHED and usage.get("session") and event.get("engine"):
                total = event.get("session_usage")
                where = event.get("session_where")  # host:cwd the session lives in
                session = (str(event["engine"]), str(usage["session"]),
                           total if isinstance(total, dict) else usage,
                           str(where) if isinstance(where, str) else "")
        if kind == ADDED:
            added_at = added_at or event.get("ts")
        elif kind == CLAIMED:
            token, holder = event.get("token"), event.get("by")
            holder_host, pid = event.get("host"), event.get("pid")
            holder_pid = pid if isinstance(pid, int) else None
            attempts.append(Attempt(
                number=int(event.get("attempt", len(attempts) + 1)),
                worker=str(holder), token=str(token), started=str(event.get("ts")),
            ))
            not_before, backoff = None, None
        elif kind == FINISHED:
            # a failed attempt's stray file is still there for the retry, which sees it as dirty
            # before it started: every attempt's count until a person requeues the job
            found = tuple(str(p) for p in event.get("out_of_scope") or ())
            # a job's branch judged as a whole against base (scope: branch) replaces the count
            outside = found if event.get("scope") == "branch" else tuple(dict.fromkeys((*outside, *found)))
            if event.get("branch"):
                branch, branch_head = str(event["branch"]), event.get("head")
                branch_pushed = bool(event.get("pushed"))
            if attempts and attempts[-1].token == event.get("token"):
                attempts[-1] = _finish(attempts[-1], event)
            duration = event.get("duration")
            wall_used += float(duration) if isinstance(duration, int | float) else 0.0
            token = holder = holder_host = holder_pid = None
            not_before = event.get("not_before")
            wait = event.get("backoff")
            backoff = float(wait) if isinstance(wait, int | float) and not_before else None
            last_outcome, last_reason = event.get("outcome"), event.get("why")
            action = event.get("action")
            if action == "retry":
                retries_used += 1
            reclaims += counts_as_reclaim(event)
            if event.get("outcome") not in (None, "ok", "interrupted"):
                last_fp, last_tail = event.get("fingerprint"), event.get("tail")
        elif kind == MOVED:
            last_reason = event.get("why") or last_reason
            if event.get("action") == "cancel" and token is not None:
                token = holder = holder_host = holder_pid = None
            if event.get("action") == "requeue":
                retries_used, reclaims, last_fp, not_before, backoff = 0, 0, None, None, None
                usd_used, tokens_used = 0.0, 0  # a person chose to spend more on it
                outside = ()
    return JobState(
        attempts=tuple(attempts), token=token, holder=holder, holder_host=holder_host,
        holder_pid=holder_pid, added_at=added_at,
        not_before=not_before, retry_backoff=backoff, retries_used=retries_used, last_fingerprint=last_fp,
        last_failure_tail=last_tail, last_outcome=last_outcome, reclaims=reclaims,
        last_reason=last_reason, events=count, wall_used=wall_used, out_of_scope=outside,
        branch=branch, branch_head=branch_head if isinstance(branch_head, str) else None,
        branch_pushed=branch_pushed, usd_used=usd_used, tokens_used=tokens_used, session=session,
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
        outcome=event.get("outcome"), verify_exit=event.get("verify_exit"),
        finished=event.get("ts"), log=event.get("log"),
        artifacts=tuple(event.get("artifacts", ())), reason=event.get("why"),
        engine=event.get("engine"),
        usage=event.get("usage") if isinstance(event.get("usage"), dict) else None,
    )


TOKEN_KEYS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


def _number(value: object) -> float:
    """A count or an amount from an event; anything else (a hand-edited event) counts 0."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value or value < 0:
        return 0.0
    return float(value)
