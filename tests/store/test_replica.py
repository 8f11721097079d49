"""The push side of a lease renewed by a commit (aq.store.replica): the commits a worker makes
carry its machine's trailer, and only a push that landed tells the machine so, dated to when
it left; a push the remote refused, or one that never went, renews nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from aq.errors import RemoteRefused, RemoteUnreachable
from aq.store.beats import trailer
from aq.store.queue import Queue
from aq.store.tx import Tx
from aq.usecases.jobs import add_job
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
