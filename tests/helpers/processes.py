"""Processes a test started or watches: alive, waited for, found by a file they wrote."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def ctrl_c_as_a_terminal_sends_it() -> None:
    """`preexec_fn` of a process the test will Ctrl-C (SIGINT): the signal's default action,
    whatever the test runner inherited. A job started with `&` by a shell without job control
    (a CI script, `cmd &` inside `( )`) has SIGINT ignored, and Python then raises no
    KeyboardInterrupt in it, nor in anything it starts."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting to be reaped counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")  # zombie, dead


def wait_dead(pid: int, within: float = 10.0) -> bool:
    """Poll until `pid` is gone; True if it went within `within` seconds."""
    end = time.monotonic() + within
    while time.monotonic() < end:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return not alive(pid)


def pid_in(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text else None
