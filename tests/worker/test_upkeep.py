"""An idle worker archives (aq.yaml archive_after): once an hour at most, a batch at a time,
the jobs final for longer; time is the test's."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aq.store.queue import Queue
from aq.worker.runner import Worker
from aq.worker.upkeep import ARCHIVE_EVERY
from tests.helpers.cli import Ran
from tests.helpers.queue import configure, stage_of, write_job

Aq = Callable[..., Ran]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def archived(root: Path, job_id: str) -> list[Path]:
    return list((root / "queue" / ".archive").glob(f"*/*/*/*/{job_id}.md"))


def test_an_idle_worker_archives_what_is_due_at_most_once_an_hour(queue_root: Path,
                                                                   aq: Aq) -> None:
    write_job(queue_root, "done", "echo done", verify="true", review_policy="auto")
    assert aq("run", "--drain").returncode == 0
    assert stage_of(queue_root, "done") == "shipped"
    configure(queue_root, archive_after="14d")
    clock, said = Clock(), []
    days = [10]
    worker = Worker(Queue(queue_root), worker_id="w", monotonic=clock, say=said.append,
                    now=lambda: datetime.now(UTC) + timedelta(days=days[0]))
    worker.upkeep.idle_turn()  # ten days on: not due yet
    assert stage_of(queue_root, "done") == "shipped"
    days[0] = 20
    worker.upkeep.idle_turn()  # due now, but the worker looked less than an hour ago
    assert stage_of(queue_root, "done") == "shipped"
    clock.now += ARCHIVE_EVERY
    worker.upkeep.idle_turn()
    assert stage_of(queue_root, "done") is None and len(archived(queue_root, "done")) == 1
    assert said == ["w: archived 1 job(s) final for over 14 day(s)"]
    assert aq("show", "done").returncode == 0  # found by id in the archive


def test_without_archive_after_a_worker_archives_nothing(queue_root: Path, aq: Aq) -> None:
    write_job(queue_root, "done", "echo done", verify="true", review_policy="auto")
    assert aq("run", "--drain").returncode == 0
    worker = Worker(Queue(queue_root), worker_id="w", monotonic=Clock(),
                    now=lambda: datetime.now(UTC) + timedelta(days=365))
    worker.upkeep.idle_turn()
    assert stage_of(queue_root, "done") == "shipped"
