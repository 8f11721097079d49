"""Ctrl-C ends a command that watches (`logs -f`, `events --follow`) quietly with 130, as the
shell expects of an interrupted command; a real process, a real SIGINT."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.cli import aq_env, run_aq
from tests.helpers.processes import ctrl_c_as_a_terminal_sends_it


@pytest.mark.parametrize("argv", [["logs", "-f", "later"], ["events", "--follow"]])
def test_ctrl_c_ends_a_watch_with_130_and_says_nothing_more(queue_root: Path,
                                                            argv: list[str]) -> None:
    added = run_aq("add", "--title", "later", "--body", "echo later", cwd=queue_root)
    assert added.returncode == 0 and added.stdout.startswith("later"), added.stderr
    watch = subprocess.Popen([sys.executable, "-m", "aq", *argv], cwd=queue_root, env=aq_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=ctrl_c_as_a_terminal_sends_it)
    try:
        assert watch.stdout is not None and watch.stderr is not None
        # each says one line first (the wait, or the add event): it is in its loop by then
        stream = watch.stderr if argv[0] == "logs" else watch.stdout
        assert stream.readline()
        watch.send_signal(signal.SIGINT)
        _out, err = watch.communicate(timeout=30)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
    assert watch.returncode == 130
    assert "Traceback" not in err and "interrupted" not in err
