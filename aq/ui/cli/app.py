"""The Typer app: every command, in the order `aq --help` lists them. The commands live in
one module per group; this only puts them together."""

from __future__ import annotations

from typing import Annotated

import typer

from aq.ui.cli import (
    agents,
    archive,
    fleet,
    jobs,
    monitoring,
    moves,
    running,
    trackers,
    upkeep,
    views,
)
from aq.ui.cli.detail import show

app = typer.Typer(
    name="aq",
    help="aq: a job queue for coding agents. The queue is a git repository; a job is a Markdown "
         "file; its stage is the folder it sits in.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion: bash, zsh, fish (job ids too)
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

def _version(asked: bool) -> None:
    if asked:
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"aq {version('aq')}")
        except PackageNotFoundError:  # run from a source tree that was never installed
            print("aq (not installed: run from its source tree)")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print aq's version and exit.",
                                          is_eager=True, callback=_version)] = False,
) -> None:
    """aq: a job queue for coding agents. The queue is a git repository; a job is a Markdown
    file; its stage is the folder it sits in."""


app.command()(upkeep.init)
app.command()(jobs.add)
app.command()(jobs.spawn)
app.command("ls")(jobs.ls_)
app.command()(show)
app.command("next")(jobs.next_)
app.command()(jobs.lint)
app.command()(running.run)
app.command()(running.logs)
app.command()(moves.promote)
app.command()(moves.ship)
app.command()(moves.reject)
app.command()(moves.requeue)
app.command()(moves.cancel)
app.command("from-tracker")(trackers.from_tracker)
app.command("to-tracker")(trackers.to_tracker)
app.command()(fleet.halt)
app.command()(fleet.resume)
app.command()(upkeep.profiles)
app.command()(upkeep.diff)
app.command()(upkeep.gc)
app.command()(archive.archive)
app.command()(views.board)
app.command()(views.dash)
app.command()(views.web)
app.command()(agents.mcp)
app.command()(views.stats)
app.command()(monitoring.alerts)
app.command()(monitoring.metrics)
app.command()(views.events)
app.command()(views.doctor)
app.command()(fleet.workers)
app.command()(upkeep.fsck)
