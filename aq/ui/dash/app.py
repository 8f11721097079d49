"""The dashboard app, and `run_dash`, which `aq dash` calls."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from typing import Any

from textual.app import App
from textual.screen import Screen

from aq.errors import UsageError
from aq.infra.clock import utc_now
from aq.store.queue import Queue
from aq.ui.dash.jobs import JobsScreen
from aq.ui.dash.session import Session
from aq.usecases.listing import Capabilities


class DashApp(App[None]):
    """The dashboard on `queue`, acting as `who`; the list is read again every `refresh`
    seconds, after `sync` (a fetch from the remote, in a worker thread) when one is given."""

    TITLE = "aq dash"
    ENABLE_COMMAND_PALETTE = False

    def __init__(self, queue: Queue, *, who: str, clock: Callable[[], datetime] = utc_now,
                 refresh: float = 2.0, sync: Callable[[], bool] | None = None,
                 capabilities: Capabilities = None) -> None:
        super().__init__()
        self.session = Session(queue, who=who, clock=clock, sync=sync, capabilities=capabilities)
        self.refresh_seconds = refresh

    def get_default_screen(self) -> Screen[Any]:
        return JobsScreen(self.session, self.refresh_seconds)


def remote_sync(queue: Queue) -> Callable[[], bool] | None:
    """A fetch that brings this clone to the remote's tip (False: the remote did not answer);
    None for a queue without a remote."""
    remote = queue.remote
    if remote is None:
        return None

    def sync() -> bool:
        return queue.refresh_from_remote()

    return sync


def probed_capabilities(queue: Queue) -> Callable[[frozenset[str]], frozenset[str]]:
    """This machine's capabilities, probed once per set of compared tools (not every refresh)."""
    from aq.infra.probe import probe

    @functools.cache
    def capabilities(compared: frozenset[str]) -> frozenset[str]:
        return probe(queue.config.engines, versions=compared)

    return capabilities


def run_dash(queue: Queue, *, who: str, refresh: float = 2.0) -> None:
    """Run the dashboard in this terminal until the person quits."""
    if not refresh > 0:
        raise UsageError(f"the refresh interval must be more than 0 seconds, not {refresh}")
    DashApp(queue, who=who, refresh=refresh, sync=remote_sync(queue),
            capabilities=probed_capabilities(queue)).run()
