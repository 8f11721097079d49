"""The reader of opencode run --format json."""

from __future__ import annotations

from aq.core.usage import Usage, add, count, plus, short_text, usd
from aq.infra.usage.reader import UsageReader, as_dict


class OpencodeReader(UsageReader):
    """opencode run --format json (JSON Lines). Each `step_finish` (one model call) carries
    `part.tokens` {input, output, reasoning, cache {read, write}} and `part.cost`: summed.
    opencode already takes the cache out of input; current versions take reasoning out of
    output, so it is added back. turns counts the steps. No model names. cli_error: an `error`
    event (its error.data.message, else error.name).
    """

    name = "opencode-json"

    def _take(self, event: dict[str, object]) -> None:
        self._take_session(event.get("sessionID"))
        kind = event.get("type")
        if kind == "step_finish":
            part = as_dict(event.get("part"))
            counts = as_dict(part.get("tokens"))
            cache = as_dict(counts.get("cache"))
            reasoning = count(counts.get("reasoning"))
            self._now = plus(self._now, Usage(
                input_tokens=count(counts.get("input")),
                output_tokens=add(count(counts.get("output")), reasoning),
                cache_read_tokens=count(cache.get("read")),
                cache_write_tokens=count(cache.get("write")),
                reasoning_tokens=reasoning, cost_usd=usd(part.get("cost"))))
            self._count_turn()
        elif kind == "error":
            error = as_dict(event.get("error"))
            message = short_text(as_dict(error.get("data")).get("message"))
            self._fail("error", message or error.get("name"))

