"""The entry point as a real process and as the tests' in-process runner (tests/helpers/cli.py)
print, say and exit alike, and the runner leaves the test process as it found it. Most CLI
tests run in-process; these keep that honest."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from tests.helpers.cli import run_aq
from tests.helpers.queue import write_job

# Each argv is run both ways; "{queue}" stands for the queue's path.
BOTH_WAYS = [
    ("--help",),
    ("ls", "--json"),
    ("show", "job-a"),
    ("show", "job-a", "--json"),
    ("show", "nope"),
    ("next", "--explain"),
    ("lint",),
    ("move", "job-a", "shipped"),
    ("add", "--bogus"),
    ("ls", "--queue", "{queue}/nowhere"),
]


@pytest.mark.parametrize("argv", BOTH_WAYS, ids=" ".join)
def test_in_process_and_real_process_print_say_and_exit_alike(queue_root: Path,
                                                               argv: tuple[str, ...]) -> None:
    write_job(queue_root, "job-a", "echo a", priority="high")
    args = [arg.replace("{queue}", str(queue_root)) for arg in argv]
    inside = run_aq(*args, cwd=queue_root)
    outside = run_aq(*args, cwd=queue_root, process=True)
    assert (inside.returncode, inside.stdout, inside.stderr) == \
        (outside.returncode, outside.stdout, outside.stderr)


def test_a_job_added_from_stdin_is_the_same_either_way(queue_root: Path) -> None:
    for process in (False, True):
        ran = run_aq("add", "-", "--json", cwd=queue_root, input="echo from stdin\n",
                     process=process)
        assert ran.returncode == 0, ran.stderr
    bodies = sorted(p.read_text().split("---")[-1].strip() for p in
                    (queue_root / "queue" / "inbox").glob("*.md"))
    assert bodies == ["echo from stdin", "echo from stdin"]


def test_the_runner_puts_back_what_a_command_changes(queue_root: Path, tmp_path: Path) -> None:
    before = (os.getcwd(), dict(os.environ), list(sys.argv), signal.getsignal(signal.SIGINT),
              signal.getsignal(signal.SIGTERM), sys.stdin, sys.stdout, sys.stderr)
    write_job(queue_root, "job-a", "echo a")
    ran = run_aq("run", "--drain", cwd=queue_root, env={"AQ_WORKER": "w-inside"})
    assert ran.returncode == 0, ran.stderr
    assert (os.getcwd(), dict(os.environ), list(sys.argv), signal.getsignal(signal.SIGINT),
            signal.getsignal(signal.SIGTERM), sys.stdin, sys.stdout, sys.stderr) == before
