"""Ways to look at the queue: a kanban (`board`), a dashboard to act from (`dash`), figures
(`stats`), the event stream (`events`), and this machine's check-up (`doctor`)."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from aq.errors import AqError, ExitStatus, UsageError
from aq.infra.clock import utc_now as now
from aq.ui.cli.options import CapOpt, JsonOpt, QueueOpt, duration_of, interval
from aq.ui.cli.session import cap_tags, caps, emit, located

if TYPE_CHECKING:
    from aq.store.queue import Queue


def board(
    once: Annotated[bool, typer.Option("--once", help="Print one snapshot and exit (as high as "
                    "the terminal; when piped, up to 8 cards a stage).")] = False,
    every: Annotated[float, typer.Option("--every", help="Seconds between refreshes.")] = 3.0,
    cards: Annotated[int | None, typer.Option("--cards", help="At most this many cards per "
                     "stage (default: what fits the terminal).")] = None,
    stage: Annotated[list[str] | None, typer.Option("--stage", "-s", help="Only this stage "
                     "(repeatable, or comma-separated), given the whole screen: inbox building "
                     "review testing shipped failed dead_letter.")] = None,
    queue: QueueOpt = None,
) -> None:
    """A kanban of the queue: a stage per column (per lane on a narrow terminal), a card per
    job, every stage on screen; live until Ctrl-C."""
    import shutil
    import time

    from aq.ui.board import board_data, board_text, stages_from

    stages = stages_from(stage)
    interval(every)
    q = located(queue)
    if once:
        size = shutil.get_terminal_size((100, 40))
        tty = sys.stdout.isatty()
        data = board_data(q, now=now(), monotonic=time.monotonic(), fetch=q.remote is not None,
                          capabilities=caps(q))
        sys.stdout.write(board_text(data, width=size.columns, color=tty, max_cards=cards,
                                    height=size.lines - 1 if tty else None, stages=stages))
        return
    _live_board(q, every, cards, stages)


def _live_board(q: Queue, every: float, shown: int | None, stages: tuple[str, ...] | None) -> None:
    """The board redrawn in place every `every` seconds until Ctrl-C."""
    import time

    from rich.console import Console
    from rich.live import Live

    from aq.ui.board import board_data, render_board

    console = Console()

    def frame() -> Any:
        data = board_data(q, now=now(), monotonic=time.monotonic(), fetch=q.remote is not None,
                          capabilities=caps(q))
        # a line short of the terminal: a frame as high as it would scroll its first line away
        return render_board(data, width=console.width, height=console.height - 1,
                            max_cards=shown, stages=stages)

    try:
        with Live(frame(), console=console, screen=False, auto_refresh=False) as live:
            while True:
                time.sleep(max(0.5, every))
                live.update(frame(), refresh=True)
    except KeyboardInterrupt:  # Ctrl-C ends a watch: quietly, as the shell expects
        raise typer.Exit(130) from None


def dash(
    every: Annotated[float | None, typer.Option("--every", help="Seconds between refreshes "
                     "(default 2; 5 when the queue has a remote, which each refresh fetches).")] = None,
    queue: QueueOpt = None,
) -> None:
    """An interactive dashboard: pick a job with the arrows, act on it with one key."""
    from aq.ui.dash.app import run_dash
    from aq.usecases.setup import who_am_i

    if every is not None:
        interval(every)
    q = located(queue)
    run_dash(q, who=who_am_i(), refresh=every or (5.0 if q.remote is not None else 2.0))


def stats(
    since: Annotated[str | None, typer.Option("--since", help="Only this recent history, e.g. "
                     "7d, 24h (default: all).")] = None,
    queue: QueueOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Figures from the event logs: throughput, wait and run times, pass rates, workers, engines
    (of the jobs in the stage folders: archived jobs are not counted)."""
    import shutil

    from aq.usecases.stats import compute_stats, stats_json
    from aq.usecases.stats_tables import stats_text

    window = duration_of("--since", since) if since is not None else None
    figures = compute_stats(located(queue), now=now(), since=window)
    if as_json:
        emit(stats_json(figures))
        return
    sys.stdout.write(stats_text(figures, width=shutil.get_terminal_size((100, 40)).columns,
                                color=sys.stdout.isatty()))


def events(
    follow_: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events "
                       "(fetching from the remote first, when there is one).")] = False,
    every: Annotated[float, typer.Option("--every", help="Seconds between looks with --follow.")] = 2.0,
    queue: QueueOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The queue's events in time order, one line (or one JSON object) each."""
    from aq.usecases.events import all_events, event_json, event_line, follow

    interval(every)
    q = located(queue)

    def show(item: Any) -> None:
        line = json.dumps(event_json(item), separators=(",", ":"), default=str) if as_json \
            else event_line(item)
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    if not follow_:
        for item in all_events(q):
            show(item)
        return
    remote = q.remote

    def fetch() -> None:
        if remote is not None:
            q.refresh_from_remote()

    try:
        for item in follow(q, poll=max(0.2, every), fetch=fetch, stop=lambda: False):
            show(item)
    except KeyboardInterrupt:  # Ctrl-C ends a watch: quietly, as the shell expects
        raise typer.Exit(130) from None


def doctor(cap: CapOpt = None, queue: QueueOpt = None, as_json: JsonOpt = False) -> None:
    """This machine's capabilities, and a check of git, the remote, the engines and the queue."""
    from aq.errors import QueueNotFound
    from aq.infra.probe import probe
    from aq.store.config import QueueConfig
    from aq.usecases.doctor import doctor as run_doctor
    from aq.usecases.doctor import to_json

    try:
        q: Queue | None = located(queue)
    except QueueNotFound:
        q = None
    try:
        config = q.config if q is not None else QueueConfig()
    except AqError:
        config = QueueConfig()  # the doctor reports the broken aq.yaml itself
    report = run_doctor(q, capabilities=probe(config.engines, cap_tags(cap)))
    if as_json:
        emit(to_json(report))
    else:
        marks = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}
        for check in report.checks:
            print(f"{marks.get(check.status, check.status)} {check.name + ':':<16} {check.detail}")
            if check.fix:
                print(f"     {'':<16} -> {check.fix}")
        print(f"capabilities: {' '.join(report.capabilities)}")
    if not report.ok:
        raise typer.Exit(ExitStatus.REFUSED)


def web(
    host: Annotated[str, typer.Option("--host", help="Address to serve on. Anything but "
                    "loopback needs a token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to serve on (0: any free one).")] = 8765,
    token: Annotated[str | None, typer.Option("--token", envvar="AQ_WEB_TOKEN", help="The token "
                     "every request must carry (default off loopback: a new one, printed once).")
                     ] = None,
    every: Annotated[float, typer.Option("--every", help="Seconds between fetches of the "
                     "remote, so the page shows the fleet.")] = 2.0,
    open_browser: Annotated[bool, typer.Option("--open", help="Open it in a browser.")] = False,
    queue: QueueOpt = None,
) -> None:
    """The queue in a browser: board, jobs, live logs, fleet, DAG, stats and the moves, served
    by this process from this clone until Ctrl-C."""
    from aq.ui.web.app import serve
    from aq.usecases.setup import who_am_i

    if not 0 <= port <= 65535:
        raise UsageError(f"--port {port} is not a port: give 0 to 65535")
    interval(every)
    if token is not None and len(token) < 16:
        raise UsageError("--token is too short to keep strangers out: give 16 characters or more")
    q = located(queue)
    serve(q.root, host=host, port=port, token=token, who=f"{who_am_i()} via web", clock=now,
          every=every, open_browser=open_browser)
