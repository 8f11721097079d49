"""Shared fixtures: a real queue made by `aq init` in a tmp dir, and `aq` run as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aq.store.queue import Queue
from aq.usecases.setup import init_queue

REPO = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def aq_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "AQ_"))}
    env.update({
        "GIT_AUTHOR_NAME": "aq-test", "GIT_AUTHOR_EMAIL": "aq-test@example.com",
        "GIT_COMMITTER_NAME": "aq-test", "GIT_COMMITTER_EMAIL": "aq-test@example.com",
        "PYTHONPATH": str(REPO),
    })
    if os.environ.get("AQ_TEST_GIT_LOG"):  # debugging a fleet test: every git call of every aq
        env["AQ_GIT_LOG"] = os.environ["AQ_TEST_GIT_LOG"]
    env.update(extra or {})
    return env


def run_aq(*args: str, cwd: Path, input: str | None = None, env: dict[str, str] | None = None,
           timeout: float = 60) -> Ran:
    """`python -m aq ARGS` in `cwd`, as a user would run it."""
    done = subprocess.run(
        [sys.executable, "-m", "aq", *args], cwd=cwd, input=input, capture_output=True,
        text=True, env=aq_env(env), timeout=timeout,
    )
    return Ran(done.returncode, done.stdout, done.stderr)


def make_queue(root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh queue made by `aq init` at `root` (a git repo with one commit), shell engine by
    default, in an environment of the test's own git identity and no AQ_ settings."""
    for key in list(os.environ):
        if key.startswith("GIT_") or key.startswith("AQ_"):
            monkeypatch.delenv(key)
    for key, value in aq_env().items():
        if key.startswith("GIT_"):
            monkeypatch.setenv(key, value)
    init_queue(root)
    config = root / "aq.yaml"
    config.write_text(config.read_text().replace("default_engine: claude", "default_engine: shell")
                      .replace("kill_grace: 10s", "kill_grace: 2s"))
    return root


@pytest.fixture
def queue_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh queue made by `aq init` (a git repo with one commit), shell engine by default."""
    yield make_queue(tmp_path / "q", monkeypatch)


@pytest.fixture
def queue(queue_root: Path) -> Queue:
    return Queue(queue_root)


@pytest.fixture
def aq(queue_root: Path) -> Callable[..., Ran]:
    """Run aq in the fixture queue: aq("ls", "--json")."""
    def call(*args: str, input: str | None = None, env: dict[str, str] | None = None,
             timeout: float = 60) -> Ran:
        return run_aq(*args, cwd=queue_root, input=input, env=env, timeout=timeout)
    return call


def write_job(root: Path, job_id: str, body: str = "echo hi", stage: str = "inbox", **keys: object) -> Path:
    """Drop a manifest file into a stage folder the way a person would (no event)."""
    import yaml

    front = {k.replace("_", "-"): v for k, v in keys.items()}
    text = (f"---\n{yaml.safe_dump(front, sort_keys=False)}---\n{body}\n" if front else f"{body}\n")
    path = root / "queue" / stage / f"{job_id}.md"
    path.write_text(text)
    return path


IDENTITY = ("-c", "user.name=aq-test", "-c", "user.email=aq-test@example.com")


def git_in(root: Path, *args: str) -> str:
    """Run git in `root` as an agent or a person would, with no GIT_* variable of ours leaking in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    done = subprocess.run(["git", *IDENTITY, *args], cwd=root, env=env, capture_output=True,
                          text=True, check=True)
    return done.stdout


def write(root: Path, path: str, text: str) -> None:
    (root / path).parent.mkdir(parents=True, exist_ok=True)
    (root / path).write_text(text)
