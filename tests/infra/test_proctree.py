"""aq.infra.proctree: an attempt's whole process tree dies with it, setsid'd tools and daemons included.

Real processes only. Each test spawns its trees with fresh marks and, whatever happens, kills
everything carrying them (and every pid it noted) in a finally, so a failure leaves nothing behind.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aq.infra import proc, proctree
from tests.helpers.processes import alive
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.skipif(not proctree.supported(), reason="needs Linux /proc")



def carrying(mark: str) -> set[int]:
    """Live pids whose environment holds the mark: a scan of /proc of the test's own."""
    needle = f"{proctree.MARK_VAR}={mark}\0".encode()
    found = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            env = Path(f"/proc/{name}/environ").read_bytes()
        except OSError:
            continue
        if (env.startswith(needle) or b"\0" + needle in env) and alive(int(name)):
            found.add(int(name))
    return found



class Lab:
    """Starts trees under marks, and kills all of them, and every pid noted, at the end."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.marks: list[str] = []
        self.children: list[subprocess.Popen[bytes]] = []
        self.noted: set[int] = set()

    def mark(self) -> str:
        mark = proctree.new_mark()
        self.marks.append(mark)
        return mark

    def start(self, script: str, mark: str | None, name: str = "pids") -> tuple[subprocess.Popen[bytes], Path]:
        """`bash -c script` in a new session (as aq starts an engine); $PIDS is a file to note pids in."""
        pids = self.tmp_path / f"{name}-{len(self.children)}"
        pids.touch()
        env = {k: v for k, v in os.environ.items() if k != proctree.MARK_VAR}
        env["PIDS"] = str(pids)
        if mark is not None:
            env[proctree.MARK_VAR] = mark
        child = subprocess.Popen(["bash", "-c", script], env=env, start_new_session=True,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        self.children.append(child)
        self.noted.add(child.pid)
        return child, pids

    def pids(self, path: Path, count: int) -> list[int]:
        """The first `count` pids noted in `path`, once they are there."""
        def noted() -> list[int]:
            return [int(line) for line in path.read_text().split()] if path.exists() else []
        assert wait_until(lambda: len(noted()) >= count), f"only {noted()} of {count} pids noted"
        self.noted.update(noted())
        return noted()[:count]

    def cleanup(self) -> None:
        for _ in range(5):
            doomed = {pid for pid in self.noted if alive(pid)}
            for mark in self.marks:
                doomed |= carrying(mark)
            for pid in doomed:
                os.kill(pid, signal.SIGKILL)
            if not doomed:
                break
            time.sleep(0.1)
        for child in self.children:
            child.kill()
            child.wait(timeout=30)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(tmp_path)
    try:
        yield lab
    finally:
        lab.cleanup()


reaper = proc.waiter  # what run_streaming hands stop_tree: wait for and reap the engine


# An engine that runs tools the way agent CLIs do, each noting its pid in $PIDS: itself, a tool
# under setsid (claude, gemini), `setsid -f` (a fork into a new session) and a double-fork daemon.
# A fifth tool scrubbed its environment (env -i: no mark) under a setsid'd shell: $PIDS.bare.
ESCAPES = """
echo $$ >> "$PIDS"
setsid bash -c 'echo $$ >> "$PIDS"; sleep 600' &
setsid -f sh -c 'echo $$ >> "$PIDS"; exec sleep 600'
( setsid sh -c 'echo $$ >> "$PIDS"; exec sleep 600' & )
setsid sh -c 'env -i sh -c "echo \\$\\$ >> $PIDS.bare; exec sleep 600"; sleep 600' &
"""
ESCAPED = 4  # pids ESCAPES notes in $PIDS


def bare(path: Path) -> Path:
    """Where ESCAPES notes the tool that scrubbed its environment."""
    return path.with_name(path.name + ".bare")


def test_stop_tree_kills_tools_in_their_own_sessions_and_daemons_of_a_running_engine(lab: Lab) -> None:
    """Stopping a running engine kills every tool it started in a new session, daemons included."""
    mark = lab.mark()
    engine, path = lab.start(ESCAPES + "sleep 600\n", mark)
    pids = lab.pids(path, ESCAPED) + lab.pids(bare(path), 1)
    assert all(alive(pid) for pid in pids)
    assert len({os.getsid(pid) for pid in pids[:ESCAPED]}) == ESCAPED  # each in a session of its own

    left = proctree.stop_tree(engine.pid, engine.pid, mark, grace=5.0, wait_exit=reaper(engine))

    assert left == []
    assert engine.returncode is not None  # reaped through wait_exit
    assert not [pid for pid in pids if alive(pid)]
    assert carrying(mark) == set()


def test_sweep_kills_what_an_engine_that_exited_left_running(lab: Lab) -> None:
    """After an engine exits on its own, sweep kills the orphans it left, found by the mark."""
    mark = lab.mark()
    engine, path = lab.start(ESCAPES + "exit 0\n", mark)
    pids = lab.pids(path, ESCAPED) + lab.pids(bare(path), 1)
    assert engine.wait(timeout=30) == 0
    orphans = [pid for pid in pids[1:] if alive(pid)]
    assert len(orphans) == ESCAPED

    killed = proctree.sweep(mark, engine.pid)

    assert set(orphans) <= set(killed)
    assert not [pid for pid in pids if alive(pid)]
    assert carrying(mark) == set()


def test_a_tool_that_scrubbed_its_environment_is_found_through_its_parent(lab: Lab) -> None:
    """A descendant without the mark is a member while its parent links it to the engine."""
    mark = lab.mark()
    engine, path = lab.start(ESCAPES + "sleep 600\n", mark)
    scrubbed = lab.pids(bare(path), 1)[0]
    assert scrubbed not in proctree.marked(mark)
    assert scrubbed in proctree.descendants(engine.pid)
    assert scrubbed in proctree.members(engine.pid, engine.pid, mark)


def test_term_comes_first_and_a_grace_to_clean_up(lab: Lab) -> None:
    """A tool in its own session gets TERM and may clean up before anything is KILLed."""
    mark = lab.mark()
    engine, path = lab.start(
        "setsid bash -c 'trap \"echo bye > \\\"$PIDS.bye\\\"; exit 0\" TERM; "
        "echo $$ >> \"$PIDS\"; while :; do sleep 1; done' & sleep 600", mark)
    tool = lab.pids(path, 1)[0]
    done = path.with_name(path.name + ".bye")

    assert proctree.stop_tree(engine.pid, engine.pid, mark, 10.0, wait_exit=reaper(engine)) == []
    assert done.read_text() == "bye\n"
    assert not alive(tool)


def test_a_process_that_ignores_term_is_killed_after_the_grace(lab: Lab) -> None:
    """TERM ignored, by the engine and by a setsid'd tool alike: both are KILLed once grace ends."""
    mark = lab.mark()
    engine, path = lab.start(
        "trap '' TERM; echo $$ >> \"$PIDS\"; "
        "setsid bash -c 'trap \"\" TERM; echo $$ >> \"$PIDS\"; while :; do sleep 1; done' & "
        "while :; do sleep 1; done", mark)
    pids = lab.pids(path, 2)

    assert proctree.stop_tree(engine.pid, engine.pid, mark, 0.3, wait_exit=reaper(engine)) == []
    assert engine.returncode == -signal.SIGKILL
    assert not [pid for pid in pids if alive(pid)]
    assert carrying(mark) == set()


FORK_LOOP = """
import os, sys, time
pids = os.environ["PIDS"]
with open(pids, "a") as out:
    out.write(f"{os.getpid()}\\n")
# a walker: each generation forks, leaves its own session and lets its parent exit
for _ in range(400):
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork() == 0:  # and a sleeper behind, as a tool would
        os.execvp("sleep", ["sleep", "600"])
    with open(pids, "a") as out:
        out.write(f"{os.getpid()}\\n")
    time.sleep(0.02)
"""


def test_a_tree_that_keeps_forking_is_stopped(lab: Lab) -> None:
    """A process that keeps forking into new sessions, its parents exiting, is stopped for good."""
    mark = lab.mark()
    engine, path = lab.start(f"{shlex.quote(sys.executable)} -c {shlex.quote(FORK_LOOP)} & sleep 600", mark)
    pids = lab.pids(path, 10)  # it is under way

    assert proctree.stop_tree(engine.pid, engine.pid, mark, 0.5, wait_exit=reaper(engine)) == []
    assert carrying(mark) == set()
    noted = lab.pids(path, 10)
    time.sleep(0.5)  # nothing is left to fork on: nothing shows up later either
    assert carrying(mark) == set()
    assert not [pid for pid in [*pids, *noted] if alive(pid)]


def test_unrelated_processes_and_other_attempts_are_untouched(lab: Lab) -> None:
    """Stopping one attempt leaves an unmarked process and another attempt's tree alone."""
    mark, other = lab.mark(), lab.mark()
    stranger, _ = lab.start("exec sleep 600", None)
    neighbour, neighbour_pids = lab.start(ESCAPES + "sleep 600\n", other)
    theirs = lab.pids(neighbour_pids, ESCAPED) + lab.pids(bare(neighbour_pids), 1)
    engine, path = lab.start(ESCAPES + "sleep 600\n", mark)
    mine = lab.pids(path, ESCAPED) + lab.pids(bare(path), 1)

    assert proctree.stop_tree(engine.pid, engine.pid, mark, 5.0, wait_exit=reaper(engine)) == []
    assert proctree.sweep(mark, engine.pid) == []

    assert not [pid for pid in mine if alive(pid)]
    assert alive(stranger.pid)
    assert alive(neighbour.pid)
    assert all(alive(pid) for pid in theirs)
    assert set(theirs[:-1]) <= carrying(other)  # the last one scrubbed its environment


def test_a_reused_pid_is_not_signalled(lab: Lab) -> None:
    """A signal is for the process a scan saw: the same pid with another start time is spared."""
    target, _ = lab.start("exec sleep 600", None)
    assert wait_until(lambda: Path(f"/proc/{target.pid}/exe").resolve().name == "sleep")
    seen = proctree.read_proc(target.pid)
    assert seen is not None
    older = proctree.Proc(seen.pid, seen.ppid, seen.pgid, seen.sid, seen.state, seen.start - 1)

    assert not proctree.send(older, signal.SIGKILL)
    assert alive(target.pid)
    assert proctree.send(seen, signal.SIGKILL)
    assert target.wait(timeout=30) == -signal.SIGKILL


def test_garbage_and_vanished_pids_do_not_raise(lab: Lab) -> None:
    """Init, ourselves, our group, vanished and impossible pids: nothing raises, nothing is hit."""
    gone, _ = lab.start("exit 0", None)
    gone.wait(timeout=30)
    huge = 2**22 + 12345
    for pid, pgid in [(0, 0), (-1, -1), (1, 1), (huge, huge), (gone.pid, gone.pid),
                      (os.getpid(), os.getpgrp())]:
        assert proctree.stop_tree(pid, pgid, None, 0.1) == []
        assert proctree.members(pid, pgid, None) == set()
    assert proctree.descendants(0) == set()
    assert proctree.descendants(huge) == set()
    assert proctree.sweep(proctree.new_mark(), huge) == []
    assert proctree.marked(proctree.new_mark()) == set()
    assert proctree.read_proc(huge) is None
    assert not proctree.has_mark(huge, "x")
