"""The reader of copilot's JSON output and its usage file."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path

from aq.core.usage import NOTHING, Usage, count, less, model_names, plus, plus_model, short_text
from aq.infra.usage.reader import MAX_READ, UsageReader, as_dict, loads


class CopilotReader(UsageReader):
    """copilot --output-format json --usage-output-file FILE.

    Tokens come from the usage file (`modelMetrics.<model>.usage`), whose inputTokens is the
    whole prompt: cache reads and writes are taken out. While it runs, `assistant.usage` events
    (or, without those, the `outputTokens` of `assistant.message`) give a running figure.
    stdout gives the session (the `result`'s sessionId), turns (`assistant.turn_start`),
    permission denials (`tool.execution_complete` with error code "denied") and cli_error
    (`session.error`, `abort`, a result exitCode other than 0). Copilot reports premium
    requests and "nano AIU", not dollars: cost_usd stays None.
    """

    name = "copilot-json"
    side_file = "usage"

    def __init__(self) -> None:
        super().__init__()
        self._events_tokens = NOTHING  # summed assistant.usage events
        self._message_output: int | None = None
        self._from_file = False

    def read_file(self, path: Path) -> None:
        with contextlib.suppress(Exception):  # see UsageReader.feed: never fail the job
            with open(path, encoding="utf-8", errors="replace") as handle:
                metrics = as_dict(as_dict(loads(handle.read(MAX_READ))).get("modelMetrics"))
            tokens = NOTHING
            for figures in metrics.values():
                tokens = plus(tokens, _copilot_tokens(as_dict(as_dict(figures).get("usage"))))
            if metrics:
                self._from_file = True
                self._set_tokens(tokens)
                self._now = replace(self._now, models=model_names(list(metrics)))

    def _take(self, event: dict[str, object]) -> None:
        kind, data = event.get("type"), as_dict(event.get("data"))
        if kind == "assistant.turn_start":
            self._count_turn()
        elif kind == "assistant.usage":
            self._events_tokens = plus(self._events_tokens, _copilot_tokens(data))
            self._take_model(data)
            self._show_running(self._events_tokens)
        elif kind == "assistant.message":
            self._take_model(data)
            output = count(data.get("outputTokens"))
            if output is not None and self._events_tokens == NOTHING:
                self._message_output = (self._message_output or 0) + output
                self._show_running(Usage(output_tokens=self._message_output))
        elif kind == "tool.execution_complete":
            if as_dict(data.get("error")).get("code") == "denied":
                denials = (self._now.permission_denials or 0) + 1
                self._now = replace(self._now, permission_denials=denials)
        elif kind == "session.error":
            self._fail("session.error", data.get("message"))
        elif kind == "abort":
            self._fail("abort", data.get("reason"))
        elif kind == "result":
            self._take_result(event)

    def _take_model(self, data: dict[str, object]) -> None:
        model = short_text(data.get("model"))
        if model is not None and not self._from_file:
            self._now = replace(self._now, models=plus_model(self._now.models, model))

    def _show_running(self, tokens: Usage) -> None:
        if not self._from_file:  # the usage file, once read, is the complete figure
            self._set_tokens(tokens)

    def _take_result(self, event: dict[str, object]) -> None:
        self._take_session(event.get("sessionId"))
        # the result comes last: a run that printed no denial had none
        self._now = replace(self._now, permission_denials=self._now.permission_denials or 0)
        code = count(event.get("exitCode"))
        if code and not self._now.cli_error:
            self._fail("exitCode", str(code))


def _copilot_tokens(raw: dict[str, object]) -> Usage:
    """Copilot's {inputTokens, outputTokens, cacheReadTokens, cacheWriteTokens, reasoningTokens},
    whose inputTokens include the cache reads and writes."""
    read, write = count(raw.get("cacheReadTokens")), count(raw.get("cacheWriteTokens"))
    return Usage(input_tokens=less(less(count(raw.get("inputTokens")), read), write),
                 output_tokens=count(raw.get("outputTokens")), cache_read_tokens=read,
                 cache_write_tokens=write, reasoning_tokens=count(raw.get("reasoningTokens")))

