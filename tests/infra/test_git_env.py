"""The user's git settings reach the git aq runs: an ssh command (a deploy key, a CI's wrapper)
and the identity; what would point git at another repository does not."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.helpers.cli import aq_env, run_aq
from tests.helpers.git import git

# An ssh that reaches no host: it runs the remote command (git-upload-pack '/path', or
# git-receive-pack) here, as sshd would there, and notes that it was used.
FAKE_SSH = """#!/bin/sh
echo "$@" >> "{log}"
while [ $# -gt 1 ]; do shift; done
exec sh -c "$1"
"""


@pytest.fixture
def ssh_queue(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """A queue cloned from ssh://fakehost/...: (its clone, the bare remote, the env with the
    user's GIT_SSH_COMMAND)."""
    seed, bare = tmp_path / "seed", tmp_path / "remote.git"
    assert run_aq("init", str(seed), cwd=tmp_path).returncode == 0
    config = seed / "aq.yaml"
    config.write_text(config.read_text().replace("default_engine: claude", "default_engine: shell"))
    git(seed, "checkout", "-q", "-B", "main")
    git(seed, "commit", "-qam", "shell engine")
    git(tmp_path, "clone", "-q", "--bare", str(seed), str(bare))
    ssh = tmp_path / "fake-ssh"
    ssh.write_text(FAKE_SSH.format(log=tmp_path / "ssh.log"))
    ssh.chmod(0o755)
    env = {"GIT_SSH_COMMAND": str(ssh)}
    clone = tmp_path / "clone"
    done = subprocess.run(["git", "clone", "-q", f"ssh://fakehost{bare}", str(clone)],
                          env=aq_env(env), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return clone, bare, env


def test_a_worker_reaches_an_ssh_remote_through_the_users_ssh_command(
        ssh_queue: tuple[Path, Path, dict[str, str]], tmp_path: Path) -> None:
    clone, bare, env = ssh_queue
    added = run_aq("add", "--body", "echo done", "--id", "j1", cwd=clone, env=env)
    assert added.returncode == 0, added.stderr
    env = {**env, "GIT_AUTHOR_NAME": "Casey CI", "GIT_COMMITTER_NAME": "Casey CI"}
    ran = run_aq("run", "--drain", cwd=clone, env=env, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert "queue/review/j1.md" in git(bare, "ls-tree", "-r", "--name-only", "main")
    assert "git-receive-pack" in (tmp_path / "ssh.log").read_text()
    # the CI's identity is the one its commits carry
    assert git(bare, "log", "-1", "--format=%an|%cn", "main").strip() == "Casey CI|Casey CI"


def test_without_the_users_ssh_command_the_remote_is_unreachable_in_one_line(
        ssh_queue: tuple[Path, Path, dict[str, str]]) -> None:
    clone, _, _ = ssh_queue
    added = run_aq("add", "--body", "echo x", cwd=clone, env={"GIT_SSH_COMMAND": "false"})
    assert added.returncode == 1
    assert added.stderr.startswith("aq: cannot reach the queue's remote 'origin'"), added.stderr
    assert len(added.stderr.strip().splitlines()) == 1, added.stderr


def test_a_hooks_git_dir_does_not_send_aq_to_another_repository(
        ssh_queue: tuple[Path, Path, dict[str, str]], tmp_path: Path) -> None:
    clone, _, env = ssh_queue
    other = tmp_path / "other"
    git(tmp_path, "init", "-q", str(other))
    listed = run_aq("ls", "--json", cwd=clone, env={**env, "GIT_DIR": str(other / ".git"),
                                                    "GIT_WORK_TREE": str(other)})
    assert listed.returncode == 0, listed.stderr
    added = run_aq("add", "--body", "echo x", "--id", "j2", cwd=clone,
                   env={**env, "GIT_DIR": str(other / ".git")})
    assert added.returncode == 0, added.stderr
    assert "j2" in git(clone, "log", "-1", "--format=%s")
    assert git(other, "rev-list", "--all").strip() == ""


def test_a_draining_worker_refused_by_the_remote_ends_saying_why(
        ssh_queue: tuple[Path, Path, dict[str, str]], tmp_path: Path) -> None:
    """A remote that refuses this machine's key is no outage to wait out: `aq run --drain`
    ends (instead of waiting a lease TTL for it to come back) and its line says why."""
    clone, _, _ = ssh_queue
    denied = tmp_path / "denied-ssh"
    denied.write_text('#!/bin/sh\necho "git@fakehost: Permission denied (publickey)." >&2\n'
                      "exit 255\n")
    denied.chmod(0o755)
    ran = run_aq("run", "--drain", "--poll", "0.2", cwd=clone,
                 env={"GIT_SSH_COMMAND": str(denied)}, timeout=120)
    assert "Permission denied (publickey)" in ran.stdout + ran.stderr, ran
    assert "Traceback" not in ran.stderr
