"""Shell completion (`aq --install-completion`): the script for each shell, and job ids
completed from the queue, as the shell would ask for them (click's completion protocol, in a
real `aq` process)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.cli import run_aq
from tests.helpers.queue import write_job

# Each shell's script, by a line only it has. Typer's own switch for tests makes
# `--show-completion SHELL` take the shell by name: left to itself it ignores the name and
# looks for a shell among the process's parents, which a test run started by no shell (cron,
# a CI runner, a background job) does not have.
SCRIPTS = {"bash": "complete -o default -F _aq_completion aq", "zsh": "#compdef aq",
           "fish": "complete --command aq"}


@pytest.mark.parametrize("shell", sorted(SCRIPTS))
def test_each_shell_gets_a_completion_script(tmp_path: Path, shell: str) -> None:
    ran = run_aq("--show-completion", shell, cwd=tmp_path, process=True,
                 env={"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"})
    assert ran.returncode == 0, ran.stderr
    assert SCRIPTS[shell] in ran.stdout and "_AQ_COMPLETE" in ran.stdout
    assert not [line for other, line in SCRIPTS.items() if other != shell and line in ran.stdout]


def complete(cwd: Path, line: str, **env: str) -> list[str]:
    words = line.split(" ")
    ran = run_aq(cwd=cwd, process=True, env={
        "_AQ_COMPLETE": "complete_bash", "COMP_WORDS": line, "COMP_CWORD": str(len(words) - 1),
        **env})
    assert ran.returncode == 0, ran.stderr
    return ran.stdout.split()


def test_a_job_argument_completes_to_the_queues_ids(queue_root: Path, tmp_path: Path) -> None:
    write_job(queue_root, "fix-login-a1")
    write_job(queue_root, "fix-logout-b2", stage="failed")
    write_job(queue_root, "docs-c3", stage="shipped")
    assert complete(queue_root, "aq show fix-") == ["fix-login-a1", "fix-logout-b2"]
    assert complete(queue_root, "aq ship d") == ["docs-c3"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert complete(elsewhere, f"aq show --queue {queue_root} fix-login") == ["fix-login-a1"]
    assert complete(elsewhere, "aq show fix") == []  # no queue here: nothing, and no traceback
