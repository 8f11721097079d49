"""`aq dash` through a real terminal: tmux runs the installed command on a queue at 80x24 and
200x50, keys go in with send-keys, and the pane is read back with capture-pane."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from textual.binding import Binding

from aq.core.lifecycle import STAGES
from aq.ui.dash.app import DashApp
from aq.ui.dash.jobs import JobsScreen
from tests.helpers.cli import aq_env
from tests.helpers.queue import stage_of, write_job
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


def keys(socket: str, *names: str) -> None:
    for name in names:
        tmux(socket, "send-keys", "-t", "dash", name)


def row(socket: str, job_id: str) -> list[str]:
    """The words of the pane's line showing `job_id`'s row."""
    return next((line.split() for line in pane(socket).splitlines() if f" {job_id} " in line), [])


def ids_shown(socket: str) -> list[str]:
    """The ids of the rows on the pane: the second word of each line that starts with a number
    and names a stage third."""
    return [words[1] for words in (line.split() for line in pane(socket).splitlines())
            if len(words) > 2 and words[0].lstrip("*").isdigit() and words[2] in STAGES]


def _shows_only(socket: str, want: list[str]) -> bool:
    return ids_shown(socket) == want


def seven_stages(root: Path) -> None:
    """A job in each stage (named after it), and a second testing job."""
    for stage in STAGES:
        write_job(root, f"in-{stage}".replace("_", "-"), stage=str(stage), title=f"A {stage} job")
    write_job(root, "in-testing-2", stage="testing", title="Another testing job")


@pytest.mark.parametrize(("width", "height"), [(80, 24), (200, 50)])
def test_in_a_real_terminal_every_stage_is_reachable_help_lists_every_key_and_marks_ship(
        queue_root: Path, width: int, height: int) -> None:
    """In tmux: `1`-`7` each show their stage's job; no line is wider than the terminal; `?`
    lists what every binding does; two jobs marked with Space and shipped with `S` then `y`
    are exactly the two that move; `q` quits."""
    seven_stages(queue_root)
    socket = f"aq-dash-test-{os.getpid()}-{time.monotonic_ns()}"
    try:
        started = tmux(socket, "new-session", "-d", "-s", "dash", "-x", str(width), "-y",
                       str(height), "-c", str(queue_root), DASH, cwd=queue_root)
        assert started.returncode == 0, started.stderr
        assert wait_until(lambda: len(ids_shown(socket)) == 8), pane(socket)
        for number, stage in enumerate(STAGES, 1):
            keys(socket, str(number))
            want = [f"in-{stage}".replace("_", "-")] + (["in-testing-2"] if stage == "testing" else [])
            assert wait_until(functools.partial(_shows_only, socket, want)), pane(socket)
        keys(socket, "0")
        assert wait_until(lambda: len(ids_shown(socket)) == 8), pane(socket)
        assert all(len(line) <= width for line in pane(socket).splitlines())
        assert "ready" in row(socket, "in-inbox")

        keys(socket, "?")
        bound = [b for b in (*JobsScreen.BINDINGS, *DashApp.BINDINGS)
                 if isinstance(b, Binding)]
        assert wait_until(lambda: all(b.description in pane(socket) for b in bound)), pane(socket)
        keys(socket, "Escape")
        assert wait_until(lambda: "Keys of the job list" not in pane(socket)), pane(socket)

        keys(socket, "g", "j", "j", "Space", "Space")  # review, then the first testing job
        assert wait_until(lambda: "2 marked" in pane(socket)), pane(socket)
        keys(socket, "S")
        assert wait_until(lambda: "Ship job 3 (in-review), job 4 (in-testing)" in pane(socket)), \
            pane(socket)
        keys(socket, "y")
        assert wait_until(lambda: stage_of(queue_root, "in-testing") == "shipped"), pane(socket)
        assert wait_until(lambda: "ship: 2 of 2 moved to shipped" in pane(socket)), pane(socket)
        assert (stage_of(queue_root, "in-review"), stage_of(queue_root, "in-testing-2")) == \
            ("shipped", "testing")

        keys(socket, "q")
        assert wait_until(lambda: tmux(socket, "has-session", "-t", "dash").returncode != 0), \
            "the dashboard did not quit on q:\n" + pane(socket)
    finally:
        tmux(socket, "kill-server")
