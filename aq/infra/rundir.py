"""An attempt's run folder on this machine (`<state>/running/<job>/`): the files a running
attempt keeps there, named by its attempt number.

The attempt writes them (aq.worker.attempt); others read them while it runs or after its
worker died: `aq logs -f` follows the log, the board and the dash show the usage so far, and
the worker that takes the job back kills what the pgid and mark name and keeps the log and
the usage. One place for the names keeps the writer and every reader agreeing; it sits in
infra so that every layer may read it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

ENGINE_VERSIONS = "engine-versions.json"


@dataclass(frozen=True, slots=True)
class RunFiles:
    """The files of attempt `attempt` in the run folder `folder`."""

    folder: Path
    attempt: int

    def _named(self, suffix: str) -> Path:
        return self.folder / f"{self.attempt}.{suffix}"

    @property
    def log(self) -> Path:
        """The running log, scrubbed as it is written."""
        return self._named("log")

    @property
    def prompt(self) -> Path:
        """The prompt as the engine reads it (AQ_PROMPT_FILE, `{prompt_file}`)."""
        return self._named("prompt")

    @property
    def previous_failure(self) -> Path:
        """The tail of the previous attempt's failure (AQ_PREVIOUS_FAILURE_FILE)."""
        return self._named("previous-failure")

    @property
    def usage(self) -> Path:
        """Where the engine's CLI writes its usage (`{usage_file}`), for readers that read a file."""
        return self._named("usage")

    @property
    def mcp_config(self) -> Path:
        """aq's MCP server as the engine reads it (`{mcp_config}`), for a job with `mcp: true`."""
        return self._named("mcp.json")

    @property
    def live_usage(self) -> Path:
        """The usage so far as the meter last kept it (JSON of `Usage.to_event`)."""
        return self._named("usage.json")

    @property
    def pgid(self) -> Path:
        """The process group of the engine, then of verify: killed after a crash."""
        return self._named("pgid")

    @property
    def mark(self) -> Path:
        """The AQ_RUN_MARK value every process of the attempt carries, found by a sweep after a crash."""
        return self._named("mark")

    @property
    def engine_versions(self) -> Path:
        """The cache of engine versions, shared by every run folder: in the state folder above running/."""
        return self.folder.parent.parent / ENGINE_VERSIONS


TAIL_BYTES = 4096  # enough of a live log's end to hold its last line
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]|[\x00-\x08\x0b-\x1f\x7f]")


def last_line(path: Path) -> str:
    """The last line with something on it at the end of the log at `path` (colour codes and
    other control characters taken out, spaces squeezed): what a running attempt said last,
    for `aq run`'s status line and the dash. "" when there is none or it cannot be read."""
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - TAIL_BYTES))
            tail = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    for line in reversed(tail.splitlines()):
        clean = " ".join(_CONTROL.sub("", line).split())
        if clean:
            return clean
    return ""
