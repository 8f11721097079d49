"""Half a move left in queue/ by a process killed mid-transaction (aq.store.recovery.HalfMoves):
the process marks the clone while it changes queue/; the next transaction, of any process, finds
the mark and puts queue/ back to HEAD. Without the mark no `git status` is run: in a clone with
a year's archive that is a tenth of a second or more of every `aq run --once`."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from aq.store.layout import Layout
from tests.helpers.fleet import fleet_in
from tests.helpers.git import git

# git, with each subcommand it is asked for written to a file first
LOGGING_GIT = """#!/bin/sh
echo "$*" >> "{log}"
exec {git} "$@"
"""


def subcommands(log: Path) -> list[str]:
    """The git subcommands logged, in order (aq's own `-c name=value` pairs skipped)."""
    found = []
    for line in log.read_text().splitlines():
        words = line.split()
        while words[:1] == ["-c"]:
            words = words[2:]
        found.append(words[0] if words else "")
    return found


def logging_git(base: Path) -> tuple[dict[str, str], Path]:
    """An environment whose git logs its calls, and the log."""
    log, wrapper = base / "git-calls.log", base / "bin" / "git"
    wrapper.parent.mkdir()
    wrapper.write_text(LOGGING_GIT.format(log=log, git=shutil.which("git")))
    wrapper.chmod(0o755)
    return {"PATH": f"{wrapper.parent}{os.pathsep}{os.environ['PATH']}"}, log


def test_half_a_move_marked_by_a_killed_process_is_put_back_by_the_next_transaction(
        tmp_path: Path) -> None:
    with fleet_in(tmp_path, clones=1) as fleet:
        (clone,) = fleet.clones
        assert fleet.aq(clone, "add", "--id", "a", "--body", "true").returncode == 0
        # what a process killed in the middle of a claim leaves: the file moved, the mark made
        (clone / "queue" / "inbox" / "a.md").rename(clone / "queue" / "building" / "a.md")
        marker = Layout.at(clone).state_dir / "tree-changing"
        marker.write_bytes(b"")
        env, log = logging_git(tmp_path)

        assert fleet.aq(clone, "add", "--id", "b", "--body", "true", env=env).returncode == 0
        assert (clone / "queue" / "inbox" / "a.md").is_file()
        assert not (clone / "queue" / "building" / "a.md").exists()
        assert not marker.exists()
        assert "status" in subcommands(log)
        assert git(clone, "status", "--porcelain", "--", "queue") == ""
        tip = git(fleet.bare, "ls-tree", "-r", "--name-only", "main", "queue/").split()
        assert sorted(p for p in tip if p.endswith(".md")) == ["queue/inbox/a.md", "queue/inbox/b.md"]


def test_without_the_mark_a_transaction_runs_no_git_status(tmp_path: Path) -> None:
    with fleet_in(tmp_path, clones=1) as fleet:
        (clone,) = fleet.clones
        env, log = logging_git(tmp_path)
        assert fleet.aq(clone, "add", "--id", "a", "--body", "true", env=env).returncode == 0
        calls = subcommands(log)
        assert "push" in calls and "status" not in calls, calls  # a transaction, pushed
