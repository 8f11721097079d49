"""Each error says what went wrong by its name, and carries the exit code README documents for
its kind (1: the action was refused, 2: the command line is wrong)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
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
from aq.ui.cli.boundary import os_line
from aq.usecases.fleet import list_workers
from aq.usecases.logs import find_log
from aq.usecases.ship import job_diff
from tests.helpers.cli import aq_env, run_aq
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


def _in_a_mount_namespace(script: str) -> subprocess.CompletedProcess[str] | None:
    """`script` run by sh as root of a user and mount namespace of its own (so it may mount);
    None where the kernel does not allow one."""
    try:
        probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=30)
    except OSError:
        return None
    if probe.returncode != 0:
        return None
    return subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True,
                          timeout=120, env=aq_env(None))


AQ = f"{sys.executable} -m aq"


def test_a_read_only_or_full_disk_is_one_line_saying_what_to_do(tmp_path: Path) -> None:
    """The system's refusal came through as the raw OS line ("No space left on device"), with
    no word of what to do; and the queue must be left as it was."""
    ro, full = tmp_path / "ro", tmp_path / "full"
    for folder in (ro, full):
        folder.mkdir()
    assert run_aq("init", str(ro / "q"), cwd=tmp_path).returncode == 0
    ran = _in_a_mount_namespace(
        f"mount --bind -o ro {ro} {ro} && cd {ro}/q && {AQ} add --id one --body hi; echo rc=$?; "
        f"mount -t tmpfs -o size=2m tmpfs {full} && {AQ} init {full}/q >/dev/null && cd {full}/q "
        f"&& (head -c 3000000 /dev/zero > {full}/filler 2>/dev/null; true) && {AQ} add --id two --body hi; "
        f"echo rc=$?; rm {full}/filler; git status --porcelain; {AQ} ls")
    if ran is None:
        pytest.skip("needs user and mount namespaces (unshare -rm) to mount a read-only or full disk")
    assert ran.stderr.splitlines() == [
        f"aq: {ro}/q/.git/aq: Read-only file system: aq must write there: run it where that file "
        "system can be written",
        "aq: No space left on device: free some space and run it again"], ran.stderr
    assert ran.stdout.splitlines() == ["rc=1", "rc=1", "no jobs"]  # nothing half-written


@pytest.mark.parametrize(("code", "advice"), [
    (errno.EACCES, "aq must read or write there: check the owner and mode of the file and its "
                   "folder"),
    (errno.EDQUOT, "free some space and run it again"),
])
def test_an_os_refusal_a_person_can_mend_says_how(code: int, advice: str) -> None:
    """The advice fits any file aq touches (the queue, its state, the repository caches)."""
    err = OSError(code, os.strerror(code), "/q/queue/inbox/a.md")
    assert os_line(err) == f"/q/queue/inbox/a.md: {os.strerror(code)}: {advice}"
    assert os_line(OSError(errno.EIO, os.strerror(errno.EIO))) == os.strerror(errno.EIO)


def test_a_reason_longer_than_a_paragraph_is_refused_before_anything_is_kept(queue_root: Path) -> None:
    """A reason goes into an event log and a commit message; a log pasted as one weighed on every
    read of the job (and of the board) ever after."""
    write_job(queue_root, "done", stage="review")
    git_in(queue_root, "add", "-A")
    git_in(queue_root, "commit", "-qm", "a job in review")
    head = git_in(queue_root, "rev-parse", "HEAD")
    line = ("aq: the reason is 2,001 characters, over the 2,000 one may be: say it in a few "
            "lines (put a long account in a file of the repository)\n")
    for args in (["reject", "done", "--reason", "x" * 2001], ["halt", "--reason", "x" * 2001]):
        ran = run_aq(*args, cwd=queue_root)
        assert (ran.returncode, ran.stderr) == (2, line), args
    assert git_in(queue_root, "rev-parse", "HEAD") == head
    assert not (queue_root / "queue" / "HALT").exists()


@pytest.mark.parametrize(("args", "said"), [
    # a lease expired before its renewal: every attempt was stopped as "lease lost"
    (("run", "--once", "--heartbeat", "20m"), "aq: a heartbeat every 20m does not renew a lease "
     "of 10m in time: make it half the lease TTL or less (--heartbeat, or heartbeat_interval "
     "in aq.yaml)\n"),
    # over half: the holder's renew deadline (3/4 of the TTL) came first, every attempt stopped
    (("run", "--once", "--lease-ttl", "8s", "--heartbeat", "7s"), "aq: a heartbeat every 7s "
     "does not renew a lease of 8s in time: make it half the lease TTL or less (--heartbeat, "
     "or heartbeat_interval in aq.yaml)\n"),
    # a watch that never rests: it spun at 30% of a core
    (("from-tracker", "cmd:x:1", "--watch", "--every", "0"), "aq: --every: '0' is not a positive "
     "duration; expected a duration such as 90s, 45m, 2h or 1h30m\n"),
])
def test_timing_flags_that_cannot_work_are_refused(queue_root: Path, args: tuple[str, ...],
                                                   said: str) -> None:
    ran = run_aq(*args, cwd=queue_root)
    assert (ran.returncode, ran.stderr) == (2, said)


@pytest.mark.parametrize(("name", "rule"), [
    ("a..b", "it may not hold '..', nor end in '.' or '.lock'"),
    ("x.lock", "it may not hold '..', nor end in '.' or '.lock'"),
    ("-", "start it with a letter or a digit"),
    ("w" * 70, "make it at most 64 characters (it has 70)"),
    ("a b", "use only letters, digits, '.', '_' and '-'"),
])
def test_a_worker_name_that_cannot_name_a_ref_says_which_rule_it_breaks(
        queue_root: Path, name: str, rule: str) -> None:
    """Each once said "use letters, digits, '.', '_' and '-'", which most of them do."""
    ran = run_aq("run", "--once", "--worker", name, cwd=queue_root)
    assert (ran.returncode, ran.stderr) == (2, f"aq: --worker {name!r}: {rule} (it names a git ref)\n")
