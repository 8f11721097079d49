"""The command line: parse, call one use-case in `aq.usecases`, render. Nothing else lives here.

`main` is the console entry. The argv forms `aq.ui.cli.quick` fully understands (`aq ls`,
`aq next` with their everyday options) run without importing Typer, whose import and command
tree cost more than the listing itself; everything else goes to the Typer app. Both end in the
one exit boundary (`aq.ui.cli.boundary`).
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    from aq.ui.cli.boundary import exit_from, typer_status
    from aq.ui.cli.quick import quick_command

    # AQ_NO_QUICK=1 sends every argv to Typer: tests run both paths and compare what they print
    command = None if os.environ.get("AQ_NO_QUICK") else quick_command(sys.argv[1:])
    if command is not None:
        exit_from(command)
    from aq.ui.cli.app import app

    exit_from(lambda: typer_status(app))
