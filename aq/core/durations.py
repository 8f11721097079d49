"""Durations and sizes the way a person writes them: `90s`, `45m`, `1h30m`, `2M` tokens, `5MiB`."""

from __future__ import annotations

import contextlib
import math
import re

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|secs?|s|mins?|m|hrs?|h|d|w)", re.I)
_UNIT_SECONDS = {
    "ms": 0.001,
    "s": 1, "sec": 1, "secs": 1,
    "m": 60, "min": 60, "mins": 60,
    "h": 3600, "hr": 3600, "hrs": 3600,
    "d": 86400,
    "w": 604800,
}
DURATION_EXAMPLES = "a duration such as 90s, 45m, 2h or 1h30m"
# The longest duration aq takes (a century): a clock plus any wait aq computes from it (a retry
# backoff doubled, a --since) must stay a date Python can hold.
MAX_DURATION = 100 * 365 * 86400.0


def parse_duration(value: object) -> float:
    """Seconds from `90s`, `45m`, `1h30m`, `2h`, or a bare number of seconds.

    Raises ValueError with what was expected; callers add the file and key.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not {DURATION_EXAMPLES}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"{value!r} is negative; expected {DURATION_EXAMPLES}")
        return _at_most_a_century(value, float(value))
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not {DURATION_EXAMPLES}")
    text = value.strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return _at_most_a_century(value, float(text))
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"{value!r} is not {DURATION_EXAMPLES}")
    return _at_most_a_century(value, total)


def parse_positive_duration(value: object) -> float:
    """A duration that must be more than nothing: a timeout, a lease, a poll."""
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"{value!r} is not a positive duration; expected {DURATION_EXAMPLES}")
    return seconds


def _at_most_a_century(value: object, seconds: float) -> float:
    if seconds != seconds:
        raise ValueError(f"{value!r} is not {DURATION_EXAMPLES}")
    if seconds > MAX_DURATION:
        raise ValueError(f"{value!r} is longer than a century; expected {DURATION_EXAMPLES}")
    return seconds


def format_duration(seconds: float) -> str:
    """The short form a person reads: `45s`, `12m`, `3h05m`, `2d4h`."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s" if seconds >= 10 or seconds == int(seconds) else f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s" if secs else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h" if hours else f"{days}d"


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)", re.I)
_SIZE_POWER = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}
SIZE_EXAMPLES = "a count or size such as 500, 2M, 1.5k or 5MiB"
MAX_SIZE = 10**18  # beyond any count or size aq meets; a 64-bit integer holds it


def parse_size(value: object) -> int:
    """A count or a byte size: `2M` tokens, `1.5k`, `5MiB`, `100KB` (binary powers only with `i`)."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not {SIZE_EXAMPLES}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"{value!r} is negative; expected {SIZE_EXAMPLES}")
        return _at_most_max_size(value, value)
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not {SIZE_EXAMPLES}")
    match = _SIZE.fullmatch(value.strip())
    if not match:
        raise ValueError(f"{value!r} is not {SIZE_EXAMPLES}")
    number, prefix, suffix = match.groups()
    base = 1024 if suffix.lower().startswith("i") else 1000
    return _at_most_max_size(value, float(number) * base ** _SIZE_POWER[prefix.lower()])


def _at_most_max_size(value: object, size: float) -> int:
    if size != size:
        raise ValueError(f"{value!r} is not {SIZE_EXAMPLES}")
    if size > MAX_SIZE:
        raise ValueError(f"{value!r} is too large; expected {SIZE_EXAMPLES}")
    return int(size)


def parse_money(value: object) -> float:
    """Dollars from `5`, `2.50` or `$5`."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not an amount of dollars such as 5 or 2.50")
    amount = None
    if isinstance(value, int | float):
        amount = float(value)
    elif isinstance(value, str):
        with contextlib.suppress(ValueError):
            amount = float(value.strip().lstrip("$"))
    if amount is None or not math.isfinite(amount) or amount < 0:
        raise ValueError(f"{value!r} is not an amount of dollars such as 5 or 2.50")
    return amount
