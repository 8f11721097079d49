"""`aq dash` once through a real terminal: tmux runs it on a demo queue, keys go in with
send-keys, and the pane is read back with capture-pane."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aq.store.queue import Queue
from tests.helpers.cli import aq_env
from tests.helpers.queue import write_job
from tests.helpers.waiting import wait_until

TMUX = shutil.which("tmux")
# the installed `aq` command (the console script beside this Python), as a person runs it
_SCRIPT = Path(sys.executable).with_name("aq")
DASH = f"{_SCRIPT} dash" if _SCRIPT.exists() else f"{sys.executable} -m aq dash"

pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed")


def tmux(socket: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert TMUX is not None
    return subprocess.run([TMUX, "-L", socket, *args], cwd=cwd, env=aq_env({"TERM": "xterm-256color"}),
                          capture_output=True, text=True, timeout=30)


def pane(socket: str) -> str:
    return tmux(socket, "capture-pane", "-p", "-t", "dash").stdout


def row(socket: str, job_id: str) -> list[str]:
    """The words of the pane's line showing `job_id`'s row."""
    return next((line.split() for line in pane(socket).splitlines() if f" {job_id} " in line), [])


def test_the_dashboard_in_a_real_terminal_lists_the_jobs_and_promotes_with_a_key(
        queue_root: Path) -> None:
    """In tmux, Down then `p` promotes the selected review job, on disk and on screen; `q` quits."""
    write_job(queue_root, "alpha", title="Alpha waits in the inbox")
    write_job(queue_root, "beta", stage="review", title="Beta waits for review")
    socket = f"aq-dash-test-{os.getpid()}-{time.monotonic_ns()}"
    try:
        started = tmux(socket, "new-session", "-d", "-s", "dash", "-x", "120", "-y", "40",
                       "-c", str(queue_root), DASH, cwd=queue_root)
        assert started.returncode == 0, started.stderr
        assert wait_until(lambda: "Beta waits for review" in pane(socket)
                        and "p Promote" in pane(socket)), pane(socket)
        tmux(socket, "send-keys", "-t", "dash", "Down")
        tmux(socket, "send-keys", "-t", "dash", "p")
        assert wait_until(lambda: Queue(queue_root).stage_of("beta") is not None
                        and str(Queue(queue_root).stage_of("beta")) == "testing"), pane(socket)
        assert wait_until(lambda: "promote beta: review -> testing" in pane(socket)
                        and row(socket, "beta")[:3] == ["2", "beta", "testing"]), pane(socket)
        tmux(socket, "send-keys", "-t", "dash", "q")
        assert wait_until(lambda: tmux(socket, "has-session", "-t", "dash").returncode != 0), \
            "the dashboard did not quit on q:\n" + pane(socket)
    finally:
        tmux(socket, "kill-server")
