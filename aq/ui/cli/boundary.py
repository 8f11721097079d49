"""The one exit boundary: a command's status ends the process; an `AqError` becomes one line
on stderr (and, under `--json`, a JSON object on stdout) and its exit code (aq.errors); so do
click's own usage errors. A traceback reaching
a person is a bug, so anything else is one line too, unless AQ_DEBUG is set."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from aq.errors import AqError, ExitStatus
from aq.ui.cli.session import say_notices

if TYPE_CHECKING:
    import typer


def exit_from(command: Callable[[], int]) -> NoReturn:
    """Run `command` and exit with its status; then say the queues' notices, error or not."""
    try:
        _guarded(command)
    finally:
        say_notices()


def fail(message: str, status: int) -> NoReturn:
    """One line on stderr and the exit code; a command asked for `--json` also prints
    {"error": the line, "exit": the code} on stdout, for the script reading it."""
    if "--json" in sys.argv[1:]:
        import json

        sys.stdout.write(json.dumps({"error": message, "exit": status}) + "\n")
        sys.stdout.flush()
    sys.stderr.write(f"aq: {message}\n")
    sys.stderr.flush()
    raise SystemExit(status)


def _guarded(command: Callable[[], int]) -> NoReturn:
    try:
        raise SystemExit(command())
    except AqError as err:
        fail(str(err), int(err.exit_status))
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(int(ExitStatus.OK)) from None
    except OSError as err:
        fail(os_line(err), int(ExitStatus.REFUSED))
    except Exception as err:
        if os.environ.get("AQ_DEBUG"):
            raise
        fail(f"internal error: {type(err).__name__}: {err} (set AQ_DEBUG=1 for the traceback, "
             "and please report it)", int(ExitStatus.REFUSED))


# what to do about the system's refusals a person can mend (errno -> the advice)
_OS_ADVICE = {
    "EROFS": "aq must write there: run it where that file system can be written",
    "EACCES": "aq must read or write there: check the owner and mode of the file and its folder",
    "EPERM": "aq must read or write there: check the owner and mode of the file and its folder",
    "ENOSPC": "free some space and run it again",
    "EDQUOT": "free some space and run it again",
}


def os_line(err: OSError) -> str:
    """The system's refusal in one line: the file, what went wrong and, where a person can
    mend it, what to do."""
    import errno

    advice = _OS_ADVICE.get(errno.errorcode.get(err.errno or 0, ""))
    line = f"{err.filename or ''}: {err.strerror or err}".lstrip(": ")
    return f"{line}: {advice}" if advice else line


@functools.cache
def _command(app: typer.Typer) -> Any:
    """The app as a click command, built once per process (~18 ms a build): a process runs one
    command, but a test runs hundreds in one process (click commands are made to run again,
    each run with a context of its own)."""
    import typer.main

    return typer.main.get_command(app)


def typer_status(app: typer.Typer) -> int:
    """Run the Typer app on sys.argv: the status it ends with, click's own errors said as aq's."""
    import typer

    click = _click_exceptions()
    try:
        # always "aq": `python -m aq` would otherwise name itself "python -m aq" in usage and hints
        status = _command(app)(prog_name="aq", standalone_mode=False)  # a typer.Exit's code
    except click.NoArgsIsHelpError as err:
        print(err.ctx.get_help() if err.ctx else "")
        return int(ExitStatus.OK)
    except typer.Exit as err:
        return int(err.exit_code)
    except typer.Abort:
        fail("interrupted", 130)
    except click.UsageError as err:
        hint = f" (see 'aq {err.ctx.info_name} --help')" if err.ctx and err.ctx.info_name != "aq" else \
            " (see 'aq --help')"
        fail(err.format_message().replace("\n", " ") + hint, int(ExitStatus.USAGE))
    except click.ClickException as err:
        fail(err.format_message(), int(ExitStatus.USAGE))
    return status if isinstance(status, int) else 0


def _click_exceptions() -> Any:
    """Typer >= 0.20 raises the exceptions of the click it vendors; older Typer uses click itself."""
    try:
        from typer._click import exceptions
    except ImportError:  # pragma: no cover - older Typer
        from click import exceptions  # type: ignore[import-not-found,no-redef,unused-ignore]
    return exceptions
