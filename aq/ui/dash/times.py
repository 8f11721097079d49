"""Times as a person at the dash reads them: "3m ago", "in 4m", "12m" (a running attempt's
elapsed time). Pure: every function is handed `now`."""

from __future__ import annotations

import re
from datetime import datetime

from aq.core.events import time_or_none

_WAIT = re.compile(r"\(in (\d+)s\)|\((\d+)s more\)")  # the scheduler's retry-wait phrasings


def short(seconds: float) -> str:
    """`45s`, `12m`, `3h05m`, `2d4h`: two units at most, the coarser first."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h" if hours else f"{days}d"


def since(then: str | None, now: datetime) -> float | None:
    """Seconds from the event time `then` to `now`; None for no (or an unreadable) time."""
    moment = time_or_none(then)
    return None if moment is None else (now - moment).total_seconds()


def ago(then: str | None, now: datetime) -> str:
    """`3m ago` for a time past, `in 4m` for one to come, "" for none."""
    seconds = since(then, now)
    if seconds is None:
        return ""
    if abs(seconds) < 1:
        return "just now"
    return f"in {short(-seconds)}" if seconds < 0 else f"{short(seconds)} ago"


def elapsed(then: str | None, now: datetime) -> str:
    """A running attempt's time so far, `12m` ("" for none)."""
    seconds = since(then, now)
    return "" if seconds is None else short(seconds)


def retry_wait(reason: str) -> str | None:
    """"retry in 4m" for the scheduler's "retry not before <iso> (in 240s)" or "retry waits its
    backoff (240s more)"; None for any other reason."""
    match = _WAIT.search(reason)
    if match is None:
        return None
    return f"retry in {short(float(match.group(1) or match.group(2)))}"
