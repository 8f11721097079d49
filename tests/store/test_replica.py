"""The push side of a lease renewed by a commit (aq.store.replica): the commits a worker makes
carry its machine's trailer, and only a push that landed tells the machine so, dated to when
it left; a push the remote refused, or one that never went, renews nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from aq.errors import RemoteRefused, RemoteUnreachable
from aq.infra import gitops
from aq.store.beats import trailer
from aq.store.queue import Queue
from aq.store.tx import Tx
from aq.usecases.jobs import add_job
from tests.helpers.cli import aq_env
from tests.helpers.fleet import fleet_in
from tests.helpers.git import git
from tests.helpers.queue import T0

REFUSE = "#!/bin/sh\necho 'refused by a hook' >&2\nexit 1\n"


def test_only_a_landed_push_renews_the_leases_its_commits_named(tmp_path: Path) -> None:
    with fleet_in(tmp_path, clones=1) as fleet:
        (clone,) = fleet.clones
        queue = Queue(clone)
        told: list[tuple[int, frozenset[str]]] = []
        pushes = iter(range(100, 200))  # the worker's clock, read as each push leaves

        def renewal() -> Callable[[frozenset[str]], None]:
            leaving = next(pushes)
            return lambda tokens: told.append((leaving, tokens))

        queue.local.trailer = lambda: (trailer("box-a", ["1.w.aa"]), frozenset({"1.w.aa"}))
        queue.replica.on_renewal = renewal

        add_job(queue, "true", {}, job_id="first", now=T0, who="w", entropy=1)
        assert told == [(100, frozenset({"1.w.aa"}))]
        message = git(fleet.bare, "log", "-1", "--format=%B", "main")
        assert message.startswith("aq: add first") and "Aq-Leases: box-a 1.w.aa" in message

        hook = fleet.bare / "hooks" / "pre-receive"
        hook.write_text(REFUSE)
        hook.chmod(0o755)
        with pytest.raises(RemoteRefused):
            add_job(queue, "true", {}, job_id="refused", now=T0, who="w", entropy=2)
        assert len(told) == 1  # asked as the push left (101), never told: it did not land
        hook.unlink()

        queue.replica.held_until = 0.0  # past the wait a refusal starts
        gone = fleet.bare.with_name("away.git")
        fleet.bare.rename(gone)
        try:
            with pytest.raises(RemoteUnreachable):
                add_job(queue, "true", {}, job_id="unreachable", now=T0, who="w", entropy=3)
        finally:
            gone.rename(fleet.bare)
        assert len(told) == 1

        add_job(queue, "true", {}, job_id="again", now=T0, who="w", entropy=4)
        assert told[-1] == (102, frozenset({"1.w.aa"}))


def test_a_transaction_lets_the_clone_lock_go_between_tries(tmp_path: Path) -> None:
    """A try that lost a race lets the clone's lock go before it waits and decides again: the
    clone's other writers (sibling workers) are not held up by one transaction's retries."""
    with fleet_in(tmp_path, clones=2) as fleet:
        mine, other = (Queue(clone) for clone in fleet.clones)
        held: list[str] = []
        taking = mine.lock

        @contextmanager
        def lock(timeout: float = 120.0) -> Iterator[None]:
            with taking(timeout):
                held.append("taken")
                yield
                held.append("let go")

        mine.lock = lock  # type: ignore[method-assign]
        raced = iter([True])

        def change(tx: Tx) -> None:
            held.append("change")
            if next(raced, False):  # another machine lands a job meanwhile: this push loses
                add_job(other, "true", {}, job_id="theirs", now=T0, who="b", entropy=1)
            tx.write(mine.qdir / "inbox" / "mine.md", "---\nverify: \"true\"\n---\n")

        mine.transact(change, "aq: add mine")
        assert held == ["taken", "change", "let go", "taken", "change", "let go"]
        assert {"mine.md", "theirs.md"} <= set(git(fleet.bare, "ls-tree", "--name-only", "main",
                                                   "queue/inbox/").replace("queue/inbox/", "").split())


def test_a_worker_looking_for_work_reads_a_sibling_fetch_within_its_poll(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each fetch is a read a forge counts: a transaction given `fresh` (a worker's look for
    work) does not fetch when another process of its clone fetched within that many seconds,
    and decides on the clone's tip as that process left it; a push on it that loses to a newer
    tip fetches on the next try, as ever. Without `fresh`, or past it, it fetches."""
    with fleet_in(tmp_path, clones=2) as fleet:
        mine, other = fleet.clones
        log = tmp_path / "git.log"
        monkeypatch.setattr(gitops, "_LOG", str(log))

        def fetches() -> int:  # of this process, in my clone
            calls = [json.loads(line) for line in log.read_text().splitlines()]
            return sum(call["args"][0] == "fetch" and Path(call["root"]) == mine.resolve()
                       for call in calls)

        sibling = subprocess.run(  # another process of the clone looks at the remote
            [sys.executable, "-c", "import sys, pathlib; from aq.store.queue import Queue; "
             "sys.exit(0 if Queue(pathlib.Path(sys.argv[1])).refresh_from_remote() else 1)",
             str(mine)],
            env=aq_env(), capture_output=True, text=True, timeout=60)
        assert sibling.returncode == 0, sibling.stderr
        add_job(Queue(other), "true", {}, job_id="theirs", now=T0, who="b", entropy=1)

        queue = Queue(mine)
        seen = queue.transact(lambda tx: tx.stage_of("theirs"), "aq: look", fresh=60.0)
        assert (seen, queue.looked, fetches()) == (None, False, 0)  # the sibling's tip

        def add(tx: Tx) -> None:
            tx.write(queue.qdir / "inbox" / "mine.md", '---\nverify: "true"\n---\n')

        queue.transact(add, "aq: add mine", fresh=60.0)  # lost to "theirs", then fetched
        assert fetches() == 1
        landed = git(fleet.bare, "ls-tree", "--name-only", "main", "queue/inbox/")
        assert {"queue/inbox/mine.md", "queue/inbox/theirs.md"} <= set(landed.split())
        assert queue.transact(lambda tx: tx.stage_of("theirs"), "aq: look") is not None
        assert (queue.looked, fetches()) == (True, 2)
