"""Readers of claude's stream/JSON output, and of the CLIs that print it too (qwen, cursor, amp)."""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

from aq.core.usage import (
    NOTHING,
    Usage,
    add,
    count,
    less,
    model_names,
    one_line,
    plus,
    plus_model,
    short_text,
    total,
    usd,
)
from aq.infra.usage.reader import UsageReader, as_dict, first_count


class ClaudeReader(UsageReader):
    """claude -p --output-format stream-json --verbose (JSON Lines ending in a `result`), or
    --output-format json (the `result` object alone).

    Tokens: while streaming, the `message.usage` of the assistant messages, once per message id
    (claude prints a message again for each content block); the `result` then replaces them
    with `modelUsage`, which counts the side calls (title, summaries, subagents) that its
    `usage` misses. Anthropic counts input without cache reads or writes and output with
    thinking, so nothing is converted. cli_error: the result's `subtype` when not "success"
    (error_max_budget_usd, error_max_turns, ...), else "is_error: <result text>" (an API error
    such as a 401 comes as subtype success with is_error true).
    """

    name = "claude-json"
    _prompt_counts_cache: ClassVar[bool] = False  # qwen's input_tokens include the cache reads

    def __init__(self) -> None:
        super().__init__()
        self._messages: dict[str, Usage] = {}
        self._running = NOTHING
        self._final_tokens = False
        self._final_models = False

    def _take(self, event: dict[str, object]) -> None:
        self._take_session(event.get("session_id"))
        kind = event.get("type")
        if kind == "assistant":
            self._take_message(as_dict(event.get("message")))
        elif kind == "result":
            self._take_result(event)

    def _take_message(self, message: dict[str, object]) -> None:
        model = short_text(message.get("model"))
        if model is not None and not self._final_models:
            self._now = replace(self._now, models=plus_model(self._now.models, model))
        raw = message.get("usage")
        if not isinstance(raw, dict):
            return
        # amp's messages have no id
        key = short_text(message.get("id")) or f"#{len(self._messages)}"
        earlier = self._messages.get(key)
        tokens = _message_tokens(raw, self._prompt_counts_cache)
        self._messages[key] = tokens
        self._running = plus(self._running.minus(earlier) if earlier else self._running, tokens)
        if not self._final_tokens:
            self._set_tokens(self._running)

    def _take_result(self, event: dict[str, object]) -> None:
        tokens, models, cost = self._result_tokens(event)
        if tokens is not None:
            self._final_tokens = True
            self._set_tokens(tokens)
        if models:
            self._final_models = True
            self._now = replace(self._now, models=models)
        denials = event.get("permission_denials")
        self._now = replace(
            self._now, cost_usd=usd(event.get("total_cost_usd")) if cost is None else cost,
            turns=count(event.get("num_turns")), cli_error=_result_error(event),
            permission_denials=len(denials) if isinstance(denials, list) else None)

    def _result_tokens(self, event: dict[str, object]
                       ) -> tuple[Usage | None, tuple[str, ...], float | None]:
        """Tokens, models and (when total_cost_usd is missing) cost the result reports."""
        per_model = as_dict(event.get("modelUsage"))
        if per_model:
            tokens, cost = NOTHING, None
            for figures in per_model.values():
                tokens = plus(tokens, _message_tokens(as_dict(figures), self._prompt_counts_cache))
                cost = add(cost, usd(as_dict(figures).get("costUSD")))
            return tokens, model_names(list(per_model)), None if "total_cost_usd" in event else cost
        raw = event.get("usage")
        if isinstance(raw, dict):
            return _message_tokens(raw, self._prompt_counts_cache), (), None
        return None, (), None  # amp's and cursor's results carry no usage: the messages' stands


class QwenReader(ClaudeReader):
    """qwen --output-format stream-json (claude-like JSON Lines) or json (one array of them).

    Its `usage.input_tokens` is the whole prompt (total_tokens = input + output), so the cache
    reads are taken out. The result's `stats.models` names the models and counts thoughts,
    which its output_tokens leave out: they are added. No cost is reported.
    """

    name = "qwen-json"
    _openers = "{["
    _prompt_counts_cache = True

    def _result_tokens(self, event: dict[str, object]
                       ) -> tuple[Usage | None, tuple[str, ...], float | None]:
        tokens, models, cost = super()._result_tokens(event)
        stats = as_dict(as_dict(event.get("stats")).get("models"))
        thoughts = total(count(as_dict(as_dict(figures).get("tokens")).get("thoughts"))
                         for figures in stats.values())
        if tokens is not None and thoughts is not None:
            tokens = replace(tokens, output_tokens=add(tokens.output_tokens, thoughts),
                             reasoning_tokens=thoughts)
        return tokens, models or model_names(list(stats)), cost


class CursorReader(ClaudeReader):
    """cursor-agent -p --output-format stream-json or json: Claude-compatible by its makers'
    docs (session_id, is_error). Its documented result has no usage; one observed in use has
    `usage: {inputTokens, outputTokens, cacheReadTokens, cacheWriteTokens}`, read as Anthropic
    counts (input without cache reads), which is unconfirmed. No cost is reported."""

    name = "cursor-json"


class AmpReader(ClaudeReader):
    """amp -x --stream-json: Claude Code-compatible stream JSON (by its makers' docs). Tokens
    come from the assistant messages' Anthropic `usage` only: its result carries none, and no
    cost. session is its thread id (T-...)."""

    name = "amp-json"


def _message_tokens(raw: dict[str, object], prompt_counts_cache: bool) -> Usage:
    """An Anthropic-style usage object (snake_case, or camelCase as in modelUsage and cursor)."""
    cache_read = first_count(raw, "cache_read_input_tokens", "cacheReadInputTokens",
                             "cacheReadTokens")
    prompt = first_count(raw, "input_tokens", "inputTokens")
    return Usage(
        input_tokens=less(prompt, cache_read) if prompt_counts_cache else prompt,
        output_tokens=first_count(raw, "output_tokens", "outputTokens"),
        cache_read_tokens=cache_read,
        cache_write_tokens=first_count(raw, "cache_creation_input_tokens",
                                       "cacheCreationInputTokens", "cacheWriteTokens"))


def _result_error(event: dict[str, object]) -> str | None:
    """A claude-like result's failure: its subtype when not "success" (with qwen's error
    message), else is_error's text."""
    subtype = short_text(event.get("subtype"))
    if subtype is not None and subtype != "success":
        detail = short_text(as_dict(event.get("error")).get("message"))
        return one_line(f"{subtype}: {detail}") if detail else subtype
    if event.get("is_error") is True:
        errors = event.get("errors")
        first = errors[0] if isinstance(errors, list) and errors else None
        detail = short_text(event.get("result")) or short_text(first) or "no detail"
        return one_line(f"is_error: {detail}")
    return None

