"""The reader of aider's analytics log."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path

from aq.core.usage import NOTHING, Usage, count, plus, plus_model, short_text, usd
from aq.infra.usage.reader import LINE_CHUNK, MAX_READ, UsageReader, as_dict


class AiderReader(UsageReader):
    """aider --no-stream --analytics-log FILE: the log's `message_send` events, one per model
    call, summed (prompt_tokens, completion_tokens, cost). Its prompt_tokens include any cache
    reads and it logs no split, so input_tokens counts them and cache_read_tokens stays None.
    Streaming (without --no-stream) makes aider estimate the tokens itself, and wrongly (the
    samples: 2.4k sent, 1 received for a call the API counted 1000 and 7). The log is appended
    to, so a `launched` event starts the count again: the figure is the latest run's. Model
    names outside aider's list are logged as ".../REDACTED" and left out. Its stdout is not read.
    """

    name = "aider-analytics"
    side_file = "analytics"

    def read_file(self, path: Path) -> None:
        with contextlib.suppress(Exception):  # see UsageReader.feed: never fail the job
            self._read_log(path)

    def _read_log(self, path: Path) -> None:
        with open(path, encoding="utf-8", errors="replace") as log:
            self._now = NOTHING  # the whole log is read again on every call
            read = 0
            while read < MAX_READ and (line := log.readline(LINE_CHUNK)):
                read += len(line)
                self._feed(line)

    def _take(self, event: dict[str, object]) -> None:
        kind = event.get("event")
        details = as_dict(event.get("properties"))
        if kind == "launched":
            self._now = NOTHING
        elif kind == "message_send":
            self._now = plus(self._now, Usage(
                input_tokens=count(details.get("prompt_tokens")),
                output_tokens=count(details.get("completion_tokens")),
                cost_usd=usd(details.get("cost"))))
            self._count_turn()
            model = short_text(details.get("main_model"))
            if model is not None and "REDACTED" not in model:  # aider hides names it does not know
                self._now = replace(self._now, models=plus_model(self._now.models, model))
        elif kind == "message_send_exception":
            self._fail("message_send_exception", details.get("exception"))

