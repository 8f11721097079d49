"""The reader of gemini's stream-json and json output."""

from __future__ import annotations

from dataclasses import replace

from aq.core.usage import NOTHING, Usage, add, count, less, model_names, one_line, plus, short_text
from aq.infra.usage.reader import MAX_READ, UsageReader, as_dict, loads


class GeminiReader(UsageReader):
    """gemini --output-format stream-json (JSON Lines: `init`, ..., `result` with `stats`) or
    json (one pretty-printed object over many lines, gathered here until its closing brace).

    Gemini counts cached tokens inside the prompt, and thoughts apart from the candidates: json
    mode gives per model input (= prompt - cached), cached, candidates and thoughts, so output
    is candidates + thoughts. stream-json's stats give no thoughts; output is total - prompt
    there (the same figure: thoughts, plus any tool-use prompt tokens, which the samples show as
    0). No cost. Errors: json mode prints `{session_id, error}` on stderr (feed it stderr too to
    see it); stream-json a `result` with status error, or an `error` event of severity error.
    """

    name = "gemini-json"

    def __init__(self) -> None:
        super().__init__()
        self._document: list[str] | None = None
        self._document_size = 0

    def _feed(self, line: str) -> None:
        if len(line) < 8 and line.strip() == "{":  # a document's first line (never indented)
            self._document, self._document_size = [line], len(line)
        elif self._document is not None:
            self._gather(line)
        else:
            super()._feed(line)

    def _gather(self, line: str) -> None:
        assert self._document is not None
        self._document.append(line)
        self._document_size += len(line)
        if line.startswith("}"):  # inner lines are indented: this closes the document
            text, self._document = "\n".join(self._document), None
            super()._feed(text)
        elif self._document_size > MAX_READ:
            self._document = None

    def _take(self, event: dict[str, object]) -> None:
        self._take_session(event.get("session_id"))
        kind, error = event.get("type"), event.get("error")
        if kind == "result":
            self._take_stream_stats(as_dict(event.get("stats")))
        elif kind is None:  # json mode's one document
            self._take_session_stats(as_dict(as_dict(event.get("stats")).get("models")))
        if kind == "error" and event.get("severity") == "error":
            self._fail("error", event.get("message"))
        elif kind in ("result", None) and (isinstance(error, dict)
                                           or event.get("status") == "error"):
            self._fail("error", _gemini_error(as_dict(error)))

    def _take_stream_stats(self, stats: dict[str, object]) -> None:
        if not stats:
            return
        prompt, output = count(stats.get("input_tokens")), count(stats.get("output_tokens"))
        cached, total = count(stats.get("cached")), count(stats.get("total_tokens"))
        reasoning = None
        if total is not None and prompt is not None and output is not None:
            reasoning = count(total - prompt - output)  # None when negative: figures disagree
        self._set_tokens(Usage(
            input_tokens=count(stats.get("input")) if "input" in stats else less(prompt, cached),
            output_tokens=add(output, reasoning), cache_read_tokens=cached,
            reasoning_tokens=reasoning))
        models = model_names(list(as_dict(stats.get("models"))))
        if models:
            self._now = replace(self._now, models=models)

    def _take_session_stats(self, models: dict[str, object]) -> None:
        tokens = NOTHING
        for figures in models.values():
            counts = as_dict(as_dict(figures).get("tokens"))
            cached, thoughts = count(counts.get("cached")), count(counts.get("thoughts"))
            prompt_only = count(counts.get("input"))
            if prompt_only is None:
                prompt_only = less(count(counts.get("prompt")), cached)
            tokens = plus(tokens, Usage(
                input_tokens=prompt_only, cache_read_tokens=cached, reasoning_tokens=thoughts,
                output_tokens=add(count(counts.get("candidates")), thoughts)))
        if models:
            self._set_tokens(tokens)
            self._now = replace(self._now, models=model_names(list(models)))


def _gemini_error(error: dict[str, object]) -> str:
    """The detail of Gemini's error object, whose message is often the API's error as JSON."""
    message = error.get("message")
    inner = (as_dict(as_dict(loads(message)).get("error"))
             if isinstance(message, str) and message.lstrip().startswith("{") else {})
    detail = (short_text(inner.get("message")) or short_text(message)
              or short_text(error.get("type")))
    code = error.get("code")
    suffix = f" (code {code})" if isinstance(code, int | str) and not isinstance(code, bool) else ""
    return one_line(f"{detail or 'no detail'}{suffix}")

