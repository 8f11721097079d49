"""The reader of codex exec --json."""

from __future__ import annotations

from dataclasses import replace

from aq.core.usage import Usage, count, less, short_text
from aq.infra.usage.reader import UsageReader, as_dict


class CodexReader(UsageReader):
    """codex exec --json (JSON Lines).

    `turn.completed.usage` is the thread's running total (on `exec resume` too: it includes the
    earlier runs; `Usage.minus` gives one run's share), so each replaces the last. OpenAI
    counts cached input inside input_tokens, and reasoning inside output_tokens: the cache
    reads are taken out of input. No cost, no model names. cli_error: "turn.failed: ..." or a
    top-level "error: ..." (its "Reconnecting..." retries are not failures); a completed turn
    clears it.
    """

    name = "codex-json"

    def _take(self, event: dict[str, object]) -> None:
        kind = event.get("type")
        if kind == "thread.started":
            self._take_session(event.get("thread_id"))
        elif kind == "turn.completed":
            self._count_turn()
            self._now = replace(self._now, cli_error=None)
            self._take_usage(event.get("usage"))
        elif kind == "turn.failed":
            error = as_dict(event.get("error"))
            self._fail("turn.failed", error.get("message") or event.get("message"))
            self._take_usage(event.get("usage"))
        elif kind == "error":
            message = short_text(event.get("message"))
            if message is not None and not message.startswith("Reconnecting"):
                self._fail("error", message)

    def _take_usage(self, raw: object) -> None:
        if isinstance(raw, dict):
            cached = count(raw.get("cached_input_tokens"))
            self._set_tokens(Usage(
                input_tokens=less(count(raw.get("input_tokens")), cached),
                output_tokens=count(raw.get("output_tokens")),
                cache_read_tokens=cached,
                cache_write_tokens=count(raw.get("cache_write_input_tokens")),
                reasoning_tokens=count(raw.get("reasoning_output_tokens"))))

