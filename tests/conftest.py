"""Shared fixtures: a real queue made by `aq init` in a tmp dir, and `aq` run on it as a user
would. What tests share besides fixtures lives in `tests/helpers/`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from aq.store.queue import Queue
from tests.helpers.cli import Ran, run_aq
from tests.helpers.queue import make_queue
from tests.helpers.workers import Workers


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


@pytest.fixture
def workers(queue_root: Path) -> Iterator[Workers]:
    """`aq run` processes in the fixture queue, started in the background, killed at the end."""
    pool = Workers(queue_root)
    try:
        yield pool
    finally:
        pool.close()
