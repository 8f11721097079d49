"""The dashboard app, and `run_dash`, which `aq dash` calls."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar, TextIO

from textual.app import App
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Input

from aq.errors import UsageError
from aq.infra.clock import utc_now
from aq.store.queue import Queue
from aq.ui.dash.help import HelpScreen
from aq.ui.dash.jobs import JobsScreen
from aq.ui.dash.session import Session
from aq.usecases.listing import Capabilities


class DashApp(App[None]):
    """The dashboard on `queue`, acting as `who`; the list is read again every `refresh`
    seconds, after `sync` (a fetch from the remote, in a worker thread) when one is given."""

    TITLE = "aq dash"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("question_mark", "help", "Help", priority=True),  # in order with the others
    ]

    def __init__(self, queue: Queue, *, who: str, clock: Callable[[], datetime] = utc_now,
                 refresh: float = 2.0, sync: Callable[[], bool] | None = None,
                 capabilities: Capabilities = None) -> None:
        super().__init__()
        self.session = Session(queue, who=who, clock=clock, sync=sync, capabilities=capabilities)
        self.refresh_seconds = refresh

    def get_default_screen(self) -> Screen[Any]:
        return JobsScreen(self.session, self.refresh_seconds)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """A line being typed (a search, an answer) takes every key, `?` too."""
        return not (action == "help" and isinstance(self.focused, Input))

    def action_help(self) -> None:
        """`?` shows the keys of the screen under it; `?` again closes them."""
        if isinstance(self.screen, HelpScreen):
            self.pop_screen()
        else:
            self.push_screen(HelpScreen(self.screen))


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


def check_terminal(stdin: TextIO, stdout: TextIO) -> None:
    """Refuse, in one line, to start without a terminal to draw on and read keys from: a
    dashboard on a pipe or a file would write escape codes forever."""
    missing = [name for name, stream in (("stdin", stdin), ("stdout", stdout))
               if not stream.isatty()]
    if missing:
        raise UsageError(f"aq dash needs a terminal, and its {' and '.join(missing)} "
                         f"{'is' if len(missing) == 1 else 'are'} not one: run it in a terminal, "
                         "or use 'aq ls' or 'aq board --once' from a script")


def run_dash(queue: Queue, *, who: str, refresh: float = 2.0) -> None:
    """Run the dashboard in this terminal until the person quits."""
    check_terminal(sys.stdin, sys.stdout)
    if not refresh > 0:
        raise UsageError(f"the refresh interval must be more than 0 seconds, not {refresh}")
    DashApp(queue, who=who, refresh=refresh, sync=remote_sync(queue),
            capabilities=probed_capabilities(queue)).run()
