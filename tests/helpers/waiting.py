"""Waiting on a condition, never on a length of time: the bounds are generous, because a busy
2-core CI machine is slow, and a check that holds returns at once."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(check: Callable[[], bool], within: float = 30.0, every: float = 0.1) -> bool:
    """Poll `check` until it holds or `within` seconds pass: its last value."""
    end = time.monotonic() + within
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(every)
    return check()


def wait_for(check: Callable[[], bool], within: float, what: str) -> None:
    """Poll `check` until it holds; fail saying `what` did not happen within `within` seconds."""
    assert wait_until(check, within), f"{what}: not within {within:.0f}s"
