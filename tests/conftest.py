"""Shared fixtures: a real queue made by `aq init` in a tmp dir, and `aq` run on it as a user
would. What tests share besides fixtures lives in `tests/helpers/`."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from aq.store.queue import Queue
from tests.helpers.cli import Ran, run_aq
from tests.helpers.queue import make_queue
from tests.helpers.workers import Workers


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist (`--dist worksteal`) each process starts on a contiguous share of this order
    and idle ones steal from the end of the others' shares. Spread the slow tests (multi-process
    runs that mostly wait) evenly over the first two thirds of every share: they overlap the
    fast ones, which keep the cores busy meanwhile, and none starts near the end to hold the run
    up alone. The heavy ones (marked `heavy`: fleet runs that keep both cores busy) are spread
    over that time of the whole run, each at its own moment, so that they rarely wait for one
    another (`one_heavy_at_a_time`)."""
    processes = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 0)
    slow = [item for item in items if item.get_closest_marker("slow")]
    if processes < 2 or len(slow) * 2 > len(items):  # a selection of mostly slow tests
        return
    heavy = [item for item in slow if item.get_closest_marker("heavy")]
    light = [item for item in slow if not item.get_closest_marker("heavy")]
    fast = [item for item in items if not item.get_closest_marker("slow")]
    left, ordered = len(items), []
    for share in range(processes):
        size = left // (processes - share)  # as xdist hands out its first shares
        left -= size
        span = size * 2 // 3
        plan: list[pytest.Item | None] = [None] * size
        wanted = [(index * span // len(heavy), heavy[index])  # heavy i at i/n of the span
                  for index in range(share, len(heavy), processes)]
        mine = light[share::processes]
        step = max(1, span // max(1, len(mine)))
        wanted += [(k * step, item) for k, item in enumerate(mine)]
        for place, item in wanted:
            free = next((at for at in range(place, size) if plan[at] is None), None)
            if free is None:
                return  # a selection too small to spread: leave its order as it is
            plan[free] = item
        ordered += plan
    rest = iter(fast)  # every slow test has its place: the places left are as many as these
    items[:] = [item if item is not None else next(rest) for item in ordered]


@pytest.fixture(autouse=True)
def one_heavy_at_a_time(request: pytest.FixtureRequest,
                        tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Two heavy fleet runs at once on two cores take each other's CPU: each ran 2.5 times
    longer and spent 2.5 times the CPU (its workers poll and are killed by the clock, not by
    its progress). Under xdist a heavy test waits for the one running in another process."""
    if request.node.get_closest_marker("heavy") is None:
        yield
        return
    from filelock import FileLock

    # each xdist process has its own base temp dir, in one the whole run shares
    with FileLock(tmp_path_factory.getbasetemp().parent / "heavy-test.lock"):
        yield


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
