"""aq fsck's checks of what HEAD holds (aq.usecases.checks)."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.cli import run_aq
from tests.helpers.git import git_in


def test_an_event_log_whose_job_file_was_removed_by_hand_is_named(queue_root: Path) -> None:
    """A job file deleted and committed by hand left its event log: fsck said nothing of a job
    whose history is there and whose file is nowhere."""
    assert run_aq("add", "--id", "gone", "--body", "echo hi", cwd=queue_root).returncode == 0
    assert run_aq("add", "--id", "kept", "--body", "echo hi", cwd=queue_root).returncode == 0
    assert run_aq("fsck", cwd=queue_root).returncode == 0
    git_in(queue_root, "rm", "-q", "queue/inbox/gone.md")
    git_in(queue_root, "commit", "-qm", "a person removes a job by hand")
    ran = run_aq("fsck", cwd=queue_root)
    assert ran.returncode == 1
    assert ran.stdout.splitlines()[:1] == [
        "HEAD: queue/.events/gone.jsonl: the event log of job gone, whose file is in no stage "
        "nor the archive: put the file back from git history (git log -- 'queue/*/gone.md'), "
        "or remove the log"], ran.stdout
