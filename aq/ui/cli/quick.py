"""The quick path: `aq ls` and `aq next` without importing Typer.

A listing is the command people and agents run most, and Typer's import and command tree cost
more than reading 1,000 jobs. `quick_command` reads only the argv forms it fully understands
and then runs the very body the Typer command runs (aq.ui.cli.listing); for anything else
(--help, an unknown option, a value that looks like an option, `-sVALUE`, any other command) it
answers None and the Typer app parses the argv as always, with its own messages. tests/
test_cli_quick.py runs each form both ways (AQ_NO_QUICK=1 forces Typer) and compares.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable, Sequence

from aq.ui.cli.listing import list_command, next_command

# Plain classes, not dataclasses: on Python 3.11 making a dataclass costs about half a
# millisecond at import, and this module is imported by every `aq ls` and `aq next`.


class Grammar:
    """A command's options as its Typer command declares them (keep the two in step)."""

    __slots__ = ("flags", "values")

    def __init__(self, flags: dict[str, str], values: dict[str, str]) -> None:
        self.flags = flags  # spelling -> parameter
        self.values = values  # spelling -> parameter that takes a value


LS = Grammar(
    flags={"--ready": "ready", "--blocked": "blocked", "--fetch": "fetch", "--json": "as_json",
           "--all": "everything"},
    values={"--stage": "stage", "-s": "stage", "--queue": "queue", "-q": "queue"},
)
NEXT = Grammar(
    flags={"--explain": "explain", "--json": "as_json"},
    values={"--cap": "cap", "--queue": "queue", "-q": "queue"},
)


class Given:
    """What an argv gave: each parameter's values in order (a flag's: one empty string)."""

    __slots__ = ("params",)

    def __init__(self, params: dict[str, list[str]]) -> None:
        self.params = params

    def flag(self, param: str) -> bool:
        return param in self.params

    def last(self, param: str) -> str | None:
        """A single-valued option: the last one given wins, as in click."""
        return self.params[param][-1] if param in self.params else None

    def every(self, param: str) -> list[str] | None:
        return self.params.get(param)


def quick_command(argv: Sequence[str]) -> Callable[[], int] | None:
    """The command `argv` asks for, when it is `ls` or `next` in a form read here; else None."""
    if not argv or argv[0] not in ("ls", "next"):
        return None
    given = _parse(LS if argv[0] == "ls" else NEXT, argv[1:])
    if given is None:
        return None
    if argv[0] == "ls":
        return _as_typer_ends(lambda: list_command(
            given.every("stage") or [], given.flag("ready"), given.flag("blocked"),
            given.flag("fetch"), given.last("queue"), given.flag("as_json"),
            given.flag("everything")))
    return _as_typer_ends(lambda: next_command(
        given.flag("explain"), given.every("cap"), given.last("queue"), given.flag("as_json")))


def _parse(grammar: Grammar, args: Sequence[str]) -> Given | None:
    """The parameters `args` give, or None at the first thing this does not fully understand."""
    params: dict[str, list[str]] = {}
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        name, eq, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if name in grammar.flags and not eq:
            params.setdefault(grammar.flags[name], []).append("")
            continue
        if name not in grammar.values:
            return None  # a positional, an unknown option, --help, -sVALUE: Typer says it
        if eq:
            value = inline
        elif rest and not rest[0].startswith("-"):
            value = rest.pop(0)
        else:
            return None  # no value, or one that looks like an option: Typer says it
        params.setdefault(grammar.values[name], []).append(value)
    return Given(params)


def _as_typer_ends(body: Callable[[], None]) -> Callable[[], int]:
    """`body` ending as it does under Typer's main: Ctrl-C is a quiet 130, a closed stdout 1."""

    def run() -> int:
        try:
            body()
        except KeyboardInterrupt:
            return 130
        except OSError as err:
            if err.errno != errno.EPIPE:
                raise
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
        return 0

    return run
