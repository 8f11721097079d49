"""`aq run`'s status line: on a real terminal (a pty) its last line names the job it runs, how
long it has run and its log's last line, under the worker's plain lines; piped, plain lines
only."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from aq.infra.rundir import last_line
from aq.ui.cli.status import Held, elapsed, status_text
from tests.helpers.cli import aq_env, run_aq
from tests.helpers.queue import write_job

STEPS = 'for i in 1 2 3; do echo "step $i of 3"; sleep 0.7; done'


def test_the_line_says_each_job_its_time_and_its_logs_last_line() -> None:
    assert status_text([], 3) == "waiting for work · 3 finished"
    assert status_text([Held("fix-a1", 192, "running tests"), Held("docs-b2", 5, "")], 0) == \
        "▶ fix-a1 3m12s ─ running tests │ ▶ docs-b2 5s"
    assert [elapsed(s) for s in (0, 59, 60, 3599, 3840)] == ["0s", "59s", "1m00s", "59m59s", "1h04m"]


def test_the_last_line_of_a_log_skips_blanks_and_terminal_codes(tmp_path: Path) -> None:
    log = tmp_path / "1.log"
    assert last_line(log) == ""  # not written yet
    log.write_bytes(b"x" * 9000 + b"\nfirst\n\x1b[32mcompiling\x1b[0m  \r\n\n  \n")
    assert last_line(log) == "compiling"


def test_on_a_terminal_aq_run_keeps_a_status_line(queue_root: Path) -> None:
    write_job(queue_root, "steps", STEPS)
    main, child = os.openpty()
    worker = subprocess.Popen([sys.executable, "-m", "aq", "run", "--once"], cwd=queue_root,
                              env=aq_env({"TERM": "xterm", "COLUMNS": "100"}), stdin=child,
                              stdout=child, stderr=child)
    os.close(child)
    seen = b""
    try:
        while True:
            try:
                chunk = os.read(main, 4096)
            except OSError:  # the terminal closed with the worker
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(main)
        assert worker.wait(timeout=60) == 0
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", seen.decode("utf-8", "replace"))
    assert "claimed steps (attempt 1)" in text  # the worker's own lines, as always
    assert re.search(r"▶ steps \d+s ─ step [123] of 3", text), text
    assert "1 claimed, 1 finished" in text


def test_piped_aq_run_prints_plain_lines_only(queue_root: Path) -> None:
    write_job(queue_root, "steps", STEPS)
    ran = run_aq("run", "--once", cwd=queue_root, process=True)
    assert ran.returncode == 0, ran.stderr
    assert "claimed steps" in ran.stdout and "▶" not in ran.stdout + ran.stderr
    assert "\x1b" not in ran.stdout + ran.stderr
