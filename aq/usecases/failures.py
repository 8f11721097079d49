"""Why a failed or dead-lettered job stopped, in one line a person can act on.

A failed attempt's `finished` event keeps the tail of what it printed, closed by a line
`[outcome: detail]` (aq.worker.attempt). The line that tells is usually the last one the engine or
verify printed ("AssertionError: totals differ"), and a shell's exit 127 always means a command
it could not find, which it says in a shape of its own ("x.prompt: line 1: frob: command not
found", "sh: 1: frob: not found", "zsh: command not found: frob"): said here one way,
"command not found: frob". A job a person moved (a reject, a cancel) says why they did.
"""

from __future__ import annotations

import json
import re

from aq.core.events import JobState

# the closing line of a tail: [engine_failed: engine exited with 127]
_SUMMARY = re.compile(r"^\[(?P<outcome>[a-z_]+): (?P<detail>.*)\]$")
_EXIT = re.compile(r"exited with (?P<code>\d+)")
_COMMAND_NOT_FOUND = 127  # what POSIX shells exit with when a command is not found
# bash and dash put the name last: "...: frob: command not found", "sh: 1: frob: not found"
_NAME_THEN_NOT_FOUND = re.compile(r"(?:^|:\s)(?P<name>[^\s:]+):\s(?P<command>command\s)?not found\s*$")
_NOT_FOUND_THEN_NAME = re.compile(r"command not found:\s*(?P<name>\S+)\s*$")  # zsh, fish
# outcomes whose cause is in what the run printed; for the others (a timeout, a budget) the
# last output line is whatever the run happened to be doing, and the detail says why it ended
_OUTPUT_TELLS = frozenset({"engine_failed", "verify_failed"})
_LOOKED_AT = 5  # a "command not found" this many lines above the end still counts


def failure_line(state: JobState) -> str | None:
    """The line a failed or dead-lettered job shows: from its last attempt's tail when that
    attempt's end is what moved it there last, else why it was moved (None: nothing said)."""
    last = state.attempts[-1] if state.attempts else None
    ended_it = last is not None and last.finished is not None and last.finished == state.moved_at
    if ended_it and state.last_failure_tail:
        line = tail_line(state.last_failure_tail)
        if line:
            return line
    return _one_line(state.last_reason)


def tail_line(tail: str) -> str | None:
    """The one line of a failure's tail that says what went wrong (see the module's docstring)."""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    outcome = detail = None
    if lines and (summary := _SUMMARY.match(lines[-1])):
        outcome, detail = summary["outcome"], summary["detail"]
        lines.pop()
    exited = _EXIT.search(detail or "")
    code = int(exited["code"]) if exited else None
    missing = _missing_command(lines[-_LOOKED_AT:], code)
    if missing is not None:
        return missing
    if code == _COMMAND_NOT_FOUND and outcome == "engine_failed":
        return f"command not found ({detail})"
    said = next((line for line in reversed(lines) if not _is_json(line)), None)
    if said is not None and (outcome is None or outcome in _OUTPUT_TELLS):
        return f"{said} · {detail}" if detail else said
    return detail or said


def _missing_command(lines: list[str], code: int | None) -> str | None:
    """"command not found: NAME" when one of `lines` (the last first) says a shell could not find
    NAME; a bare "NAME: not found" counts only with exit 127, as other tools say that of files."""
    for line in reversed(lines):
        found = _NOT_FOUND_THEN_NAME.search(line)
        if found is None:
            found = _NAME_THEN_NOT_FOUND.search(line)
            if found is not None and not found["command"] and code != _COMMAND_NOT_FOUND:
                found = None
        if found is not None:
            return f"command not found: {found['name']}"
    return None


def _is_json(line: str) -> bool:
    """A line of an engine's JSON stream: no sentence for a person."""
    if not (line.startswith("{") and line.endswith("}")):
        return False
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


def _one_line(text: str | None) -> str | None:
    return " ".join((text or "").split()) or None
