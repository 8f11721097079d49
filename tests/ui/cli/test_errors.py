"""Each error says what went wrong by its name, and carries the exit code README documents for
its kind (1: the action was refused, 2: the command line is wrong)."""

from __future__ import annotations

from pathlib import Path

import pytest
from filelock import FileLock

from aq.errors import (
    AqError,
    ExitStatus,
    InvalidJobId,
    LogNotFound,
    NotApplicable,
    PullRequestFailed,
    QueueBusy,
    RemoteUnreachable,
    UsageError,
)
from aq.store.queue import Queue
from aq.usecases.fleet import list_workers
from aq.usecases.logs import find_log
from aq.usecases.ship import job_diff
from tests.helpers.cli import run_aq
from tests.helpers.git import git_in
from tests.helpers.queue import write_job


@pytest.mark.parametrize(("error", "status"), [
    (UsageError, ExitStatus.USAGE),
    (InvalidJobId, ExitStatus.USAGE),
    (QueueBusy, ExitStatus.REFUSED),
    (LogNotFound, ExitStatus.REFUSED),
    (NotApplicable, ExitStatus.REFUSED),
    (PullRequestFailed, ExitStatus.REFUSED),
    (RemoteUnreachable, ExitStatus.REFUSED),
])
def test_each_kind_of_error_carries_its_exit_code(error: type[AqError], status: ExitStatus) -> None:
    """A wrong command line exits 2; a refused action (busy, missing, unreachable) exits 1."""
    assert error("what went wrong").exit_status == status


def test_a_held_queue_lock_is_queue_busy(queue: Queue) -> None:
    """Another aq holding the clone's lock past the wait makes QueueBusy, naming the lock."""
    path = queue.state_dir / "queue.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path)), pytest.raises(QueueBusy) as raised, queue.lock(timeout=0.05):
        pass
    assert str(raised.value) == f"the queue lock {path} is busy: another aq is writing; try again"
    assert raised.value.exit_status == ExitStatus.REFUSED
    with queue.lock(timeout=0.05):  # let go, it is free again
        pass


def test_the_log_of_a_job_never_run_is_log_not_found(queue_root: Path) -> None:
    """`aq logs` of a job that has not run is refused (exit 1) in one line: LogNotFound."""
    write_job(queue_root, "fresh")
    with pytest.raises(LogNotFound, match="fresh has not been run yet"):
        find_log(Queue(queue_root), "fresh", None)
    ran = run_aq("logs", "fresh", cwd=queue_root)
    assert ran.returncode == ExitStatus.REFUSED
    assert ran.stderr == "aq: fresh has not been run yet (it is in inbox)\n"


def test_commands_with_nothing_to_work_on_are_not_applicable(queue: Queue) -> None:
    """`aq workers` on a queue with no remote, `aq diff` of a job with no repo: NotApplicable."""
    write_job(queue.root, "plain")
    with pytest.raises(NotApplicable, match="no git remote"):
        list_workers(queue, monotonic=0.0)
    with pytest.raises(NotApplicable, match="plain works on no repo"):
        job_diff(queue, "plain")


def test_a_remote_that_does_not_answer_is_remote_unreachable(queue_root: Path, tmp_path: Path) -> None:
    """`aq workers` when the queue's remote does not answer exits 1 saying so: RemoteUnreachable."""
    git_in(queue_root, "remote", "add", "origin", str(tmp_path / "gone.git"))
    with pytest.raises(RemoteUnreachable):
        list_workers(Queue(queue_root), monotonic=0.0)
    ran = run_aq("workers", cwd=queue_root)
    assert ran.returncode == ExitStatus.REFUSED
    assert ran.stderr == (f"aq: cannot reach the queue's remote 'origin' ('{tmp_path / 'gone.git'}' "
                          "does not appear to be a git repository): try again when it answers\n")


@pytest.mark.parametrize("args", [("board", "--every", "inf"), ("board", "--every", "-1"),
                                  ("events", "--follow", "--every", "nan"),
                                  ("dash", "--every", "0")])
def test_a_live_views_interval_must_be_a_sane_number_of_seconds(queue_root: Path,
                                                                 args: tuple[str, ...]) -> None:
    """Infinity once reached a refresh thread's sleep as a traceback; NaN a sleep's ValueError."""
    ran = run_aq(*args, cwd=queue_root)
    assert ran.returncode == ExitStatus.USAGE, ran
    assert ran.stderr.startswith(f"aq: --every {args[-1]}") and ran.stderr.count("\n") == 1, ran
