"""Spawning a child, in-process on a real queue: the parent's stage is checked again under the
lock, so a parent that moved on between the look and the write gets no child."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from aq.core.lifecycle import Action
from aq.errors import MoveRefused
from aq.store.queue import Queue
from aq.store.replica import Replay
from aq.store.tx import Tx
from aq.usecases.children import spawn_child
from aq.usecases.moves import move_job
from tests.helpers.git import git
from tests.helpers.queue import T0, write_job

WHO = "tester@bench"
T = TypeVar("T")


class MovedMeanwhile(Queue):
    """A queue on which someone else cancels `parent` just before this one's next transaction."""

    def __init__(self, root: Path, parent: str) -> None:
        super().__init__(root)
        self.parent: str | None = parent

    def transact(self, change: Callable[[Tx], T], message: str,
                 describe: Callable[[T], str] | None = None, *,
                 replay: Replay[T] | None = None) -> T:
        if self.parent is not None:
            move_job(Queue(self.root), self.parent, Action.CANCEL, who="someone", env={}, now=T0)
            self.parent = None
        return super().transact(change, message, describe, replay=replay)


def test_a_parent_canceled_between_the_look_and_the_write_gets_no_child(queue_root: Path) -> None:
    write_job(queue_root, "parent", "echo parent")
    git(queue_root, "add", "-A")
    git(queue_root, "commit", "-qm", "parent")
    queue = MovedMeanwhile(queue_root, "parent")
    with pytest.raises(MoveRefused, match="parent is in failed: a child is added while its parent"):
        spawn_child(queue, "parent", "echo kid", {"title": "kid"}, now=T0, who=WHO, entropy=1)
    assert list((queue_root / "queue" / "inbox").glob("*.md")) == []
    assert "parent: parent" not in git(queue_root, "log", "-p", "--format=")


def test_a_parent_at_work_gets_its_child_once(queue_root: Path) -> None:
    write_job(queue_root, "parent", "echo parent")
    queue = Queue(queue_root)
    first = spawn_child(queue, "parent", "echo kid", {"title": "kid"}, now=T0, who=WHO, entropy=1)
    again = spawn_child(queue, "parent", "echo kid", {"title": "kid"}, now=T0, who=WHO, entropy=2)
    assert (first.created, again.created, again.job.id) == (True, False, first.job.id)
