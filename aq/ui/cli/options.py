"""The options and arguments many commands share, spelled once so their help reads the same."""

from __future__ import annotations

from typing import Annotated

import typer

QueueOpt = Annotated[str | None, typer.Option("--queue", "-q", help="Queue folder (default: "
                     "walk up from here to the first folder holding queue/inbox; or AQ_QUEUE).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts and agents.")]
JobArg = Annotated[str, typer.Argument(help="Job id or a unique prefix of one.")]
CapOpt = Annotated[list[str] | None, typer.Option("--cap", help="Extra capability tag (repeatable).")]
