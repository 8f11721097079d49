"""What an agent CLI says a run used: tokens, cost, its session, and its own failure signal.

Each CLI reports usage in a shape of its own (tests/data/agent-cli-samples holds what real
CLIs printed against a fake model API). A reader per output format turns the lines the CLI
prints on stdout, and for aider and copilot a side file it writes, into one `Usage` whose
figures mean the same whatever the CLI:

- `input_tokens` never counts cache reads: where a CLI's prompt count includes them (codex,
  gemini, qwen, copilot) they are taken out, so input + cache read + cache write is the whole
  prompt. Only aider logs no split: its input counts them and cache_read_tokens stays None;
- `output_tokens` counts reasoning (thinking) tokens: where a CLI reports them apart (gemini,
  opencode, qwen) they are added; `reasoning_tokens` says how many were reasoning, where known;
- `cost_usd` is the CLI's own figure, never computed by a reader; `priced` fills it from
  aq.yaml `prices:` when the CLI reports none.

A reader never raises: a line it cannot use (not JSON, another event, a wrong type, a count
below 0 or beyond any real run) is skipped. `usage` is the figure so far, so a budget can be
watched while the CLI streams.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar, TypeVar

from aq.core.durations import parse_money
from aq.errors import ConfigError

_MAX_TOKENS = 10**12  # no run uses more; a bigger count is garbage (and would overflow a float)
_MAX_USD = 1e7
_MAX_TEXT = 200  # a session id, model name or cli_error line is cut to this
_MAX_MODELS = 32
_MAX_READ = 64 * 2**20  # characters of a side file, or of one pretty-printed document, read
_LINE_CHUNK = 2**20  # a side file is read in lines of at most this, so no line can eat memory

_Number = TypeVar("_Number", int, float)


@dataclass(frozen=True, slots=True)
class Usage:
    """What one run of an agent CLI used, as far as it said (None: it did not say)."""

    input_tokens: int | None = None  # prompt tokens, NOT counting cache reads
    output_tokens: int | None = None  # including reasoning tokens
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None  # the part of output_tokens that was reasoning
    cost_usd: float | None = None  # as the CLI reported it; None when it reports none
    models: tuple[str, ...] = ()
    session: str | None = None  # session/thread id to resume
    turns: int | None = None
    cli_error: str | None = None  # the CLI's own failure signal, even when it exited 0
    permission_denials: int | None = None

    @property
    def tokens(self) -> int | None:
        """All tokens processed: input + output + cache read + cache write (None if none known)."""
        known = [value for value in (self.input_tokens, self.output_tokens, self.cache_read_tokens,
                                     self.cache_write_tokens) if value is not None]
        return sum(known) if known else None

    def to_event(self) -> dict[str, object]:
        """The known fields, for an event; `from_event` reads it back."""
        event: dict[str, object] = {}
        for name in _FIELDS:
            value = getattr(self, name)
            if value is not None and value != () and value != "":
                event[name] = list(value) if name == "models" else value
        return event

    @classmethod
    def from_event(cls, raw: object) -> Usage | None:
        """The usage an event recorded, a field of the wrong type left out; None if none is left."""
        if not isinstance(raw, Mapping):
            return None
        usage = cls(
            input_tokens=_count(raw.get("input_tokens")),
            output_tokens=_count(raw.get("output_tokens")),
            cache_read_tokens=_count(raw.get("cache_read_tokens")),
            cache_write_tokens=_count(raw.get("cache_write_tokens")),
            reasoning_tokens=_count(raw.get("reasoning_tokens")),
            cost_usd=_usd(raw.get("cost_usd")),
            models=_names(raw.get("models")),
            session=_text(raw.get("session")),
            turns=_count(raw.get("turns")),
            cli_error=_text(raw.get("cli_error")),
            permission_denials=_count(raw.get("permission_denials")),
        )
        return None if usage == _NOTHING else usage

    def minus(self, earlier: Usage) -> Usage:
        """This run's figures from a running total and the total before the run (codex resume
        reports the thread's total): tokens and cost subtracted, never below 0; the rest as is."""
        return replace(
            self,
            input_tokens=_less(self.input_tokens, earlier.input_tokens),
            output_tokens=_less(self.output_tokens, earlier.output_tokens),
            cache_read_tokens=_less(self.cache_read_tokens, earlier.cache_read_tokens),
            cache_write_tokens=_less(self.cache_write_tokens, earlier.cache_write_tokens),
            reasoning_tokens=_less(self.reasoning_tokens, earlier.reasoning_tokens),
            cost_usd=_less(self.cost_usd, earlier.cost_usd),
        )


_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
           "reasoning_tokens", "cost_usd", "models", "session", "turns", "cli_error",
           "permission_denials")
_NOTHING = Usage()


class UsageReader:
    """Turns what one CLI prints into a running `Usage`; a subclass per output format.

    `feed` takes each line of the CLI's stdout as it arrives; `read_file` a side file it wrote
    (aider's analytics log, copilot's usage file: `side_file` says which, None for the rest).
    """

    name: ClassVar[str] = ""
    side_file: ClassVar[str | None] = None
    _openers: ClassVar[str] = "{"  # first character of a line worth parsing (cheap pre-check)

    def __init__(self) -> None:
        self._now = _NOTHING

    @property
    def usage(self) -> Usage | None:
        """What the CLI has reported so far; None while it has reported nothing usable."""
        return None if self._now == _NOTHING else self._now

    def feed(self, line: str) -> None:
        """One line of the CLI's stdout. Never raises."""
        # The parsing below is written not to raise; this is the backstop, because usage is
        # bookkeeping and a bug in it must never fail the job whose output it watches.
        with contextlib.suppress(Exception):
            self._feed(line)

    def read_file(self, path: Path) -> None:
        """A side file the CLI wrote; missing or garbage changes nothing. Never raises."""

    def _feed(self, line: str) -> None:
        for event in self._events(line):
            self._take(event)

    def _events(self, text: str) -> Iterator[dict[str, object]]:
        text = text.strip()
        if not text or text[0] not in self._openers:
            return
        parsed = _loads(text)
        if isinstance(parsed, dict):
            yield parsed
        elif isinstance(parsed, list):  # qwen's json mode: every message in one array
            yield from (item for item in parsed if isinstance(item, dict))

    def _take(self, event: dict[str, object]) -> None:
        """One JSON object the CLI printed."""

    def _set_tokens(self, tokens: Usage) -> None:
        self._now = _with_tokens(self._now, tokens)

    def _take_session(self, value: object) -> None:
        session = _text(value)
        if session is not None:
            self._now = replace(self._now, session=session)

    def _count_turn(self) -> None:
        self._now = replace(self._now, turns=(self._now.turns or 0) + 1)

    def _fail(self, what: str, detail: object) -> None:
        """Record the CLI's failure signal as one line, "<what>: <detail>"."""
        self._now = replace(self._now, cli_error=_line(f"{what}: {_text(detail) or 'no detail'}"))


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
        self._running = _NOTHING
        self._final_tokens = False
        self._final_models = False

    def _take(self, event: dict[str, object]) -> None:
        self._take_session(event.get("session_id"))
        kind = event.get("type")
        if kind == "assistant":
            self._take_message(_dict(event.get("message")))
        elif kind == "result":
            self._take_result(event)

    def _take_message(self, message: dict[str, object]) -> None:
        model = _text(message.get("model"))
        if model is not None and not self._final_models:
            self._now = replace(self._now, models=_plus_name(self._now.models, model))
        raw = message.get("usage")
        if not isinstance(raw, dict):
            return
        key = _text(message.get("id")) or f"#{len(self._messages)}"  # amp's messages have no id
        earlier = self._messages.get(key)
        tokens = _message_tokens(raw, self._prompt_counts_cache)
        self._messages[key] = tokens
        self._running = _plus(self._running.minus(earlier) if earlier else self._running, tokens)
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
            self._now, cost_usd=_usd(event.get("total_cost_usd")) if cost is None else cost,
            turns=_count(event.get("num_turns")), cli_error=_result_error(event),
            permission_denials=len(denials) if isinstance(denials, list) else None)

    def _result_tokens(self, event: dict[str, object]
                       ) -> tuple[Usage | None, tuple[str, ...], float | None]:
        """Tokens, models and (when total_cost_usd is missing) cost the result reports."""
        per_model = _dict(event.get("modelUsage"))
        if per_model:
            tokens, cost = _NOTHING, None
            for figures in per_model.values():
                tokens = _plus(tokens, _message_tokens(_dict(figures), self._prompt_counts_cache))
                cost = _add(cost, _usd(_dict(figures).get("costUSD")))
            return tokens, _names(list(per_model)), None if "total_cost_usd" in event else cost
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
        stats = _dict(_dict(event.get("stats")).get("models"))
        thoughts = _total(_count(_dict(_dict(figures).get("tokens")).get("thoughts"))
                          for figures in stats.values())
        if tokens is not None and thoughts is not None:
            tokens = replace(tokens, output_tokens=_add(tokens.output_tokens, thoughts),
                             reasoning_tokens=thoughts)
        return tokens, models or _names(list(stats)), cost


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
            error = _dict(event.get("error"))
            self._fail("turn.failed", error.get("message") or event.get("message"))
            self._take_usage(event.get("usage"))
        elif kind == "error":
            message = _text(event.get("message"))
            if message is not None and not message.startswith("Reconnecting"):
                self._fail("error", message)

    def _take_usage(self, raw: object) -> None:
        if isinstance(raw, dict):
            cached = _count(raw.get("cached_input_tokens"))
            self._set_tokens(Usage(
                input_tokens=_less(_count(raw.get("input_tokens")), cached),
                output_tokens=_count(raw.get("output_tokens")),
                cache_read_tokens=cached,
                cache_write_tokens=_count(raw.get("cache_write_input_tokens")),
                reasoning_tokens=_count(raw.get("reasoning_output_tokens"))))


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
        elif self._document_size > _MAX_READ:
            self._document = None

    def _take(self, event: dict[str, object]) -> None:
        self._take_session(event.get("session_id"))
        kind, error = event.get("type"), event.get("error")
        if kind == "result":
            self._take_stream_stats(_dict(event.get("stats")))
        elif kind is None:  # json mode's one document
            self._take_session_stats(_dict(_dict(event.get("stats")).get("models")))
        if kind == "error" and event.get("severity") == "error":
            self._fail("error", event.get("message"))
        elif kind in ("result", None) and (isinstance(error, dict) or event.get("status") == "error"):
            self._fail("error", _gemini_error(_dict(error)))

    def _take_stream_stats(self, stats: dict[str, object]) -> None:
        if not stats:
            return
        prompt, output = _count(stats.get("input_tokens")), _count(stats.get("output_tokens"))
        cached, total = _count(stats.get("cached")), _count(stats.get("total_tokens"))
        reasoning = None
        if total is not None and prompt is not None and output is not None:
            reasoning = _count(total - prompt - output)  # None when negative: figures disagree
        self._set_tokens(Usage(
            input_tokens=_count(stats.get("input")) if "input" in stats else _less(prompt, cached),
            output_tokens=_add(output, reasoning), cache_read_tokens=cached,
            reasoning_tokens=reasoning))
        models = _names(list(_dict(stats.get("models"))))
        if models:
            self._now = replace(self._now, models=models)

    def _take_session_stats(self, models: dict[str, object]) -> None:
        tokens = _NOTHING
        for figures in models.values():
            counts = _dict(_dict(figures).get("tokens"))
            cached, thoughts = _count(counts.get("cached")), _count(counts.get("thoughts"))
            prompt_only = _count(counts.get("input"))
            if prompt_only is None:
                prompt_only = _less(_count(counts.get("prompt")), cached)
            tokens = _plus(tokens, Usage(
                input_tokens=prompt_only, cache_read_tokens=cached, reasoning_tokens=thoughts,
                output_tokens=_add(_count(counts.get("candidates")), thoughts)))
        if models:
            self._set_tokens(tokens)
            self._now = replace(self._now, models=_names(list(models)))


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
            self._now = _NOTHING  # the whole log is read again on every call
            read = 0
            while read < _MAX_READ and (line := log.readline(_LINE_CHUNK)):
                read += len(line)
                self._feed(line)

    def _take(self, event: dict[str, object]) -> None:
        kind = event.get("event")
        details = _dict(event.get("properties"))
        if kind == "launched":
            self._now = _NOTHING
        elif kind == "message_send":
            self._now = _plus(self._now, Usage(
                input_tokens=_count(details.get("prompt_tokens")),
                output_tokens=_count(details.get("completion_tokens")),
                cost_usd=_usd(details.get("cost"))))
            self._count_turn()
            model = _text(details.get("main_model"))
            if model is not None and "REDACTED" not in model:  # aider hides names it does not know
                self._now = replace(self._now, models=_plus_name(self._now.models, model))
        elif kind == "message_send_exception":
            self._fail("message_send_exception", details.get("exception"))


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
        self._events_tokens = _NOTHING  # summed assistant.usage events
        self._message_output: int | None = None
        self._from_file = False

    def read_file(self, path: Path) -> None:
        with contextlib.suppress(Exception):  # see UsageReader.feed: never fail the job
            with open(path, encoding="utf-8", errors="replace") as handle:
                metrics = _dict(_dict(_loads(handle.read(_MAX_READ))).get("modelMetrics"))
            tokens = _NOTHING
            for figures in metrics.values():
                tokens = _plus(tokens, _copilot_tokens(_dict(_dict(figures).get("usage"))))
            if metrics:
                self._from_file = True
                self._set_tokens(tokens)
                self._now = replace(self._now, models=_names(list(metrics)))

    def _take(self, event: dict[str, object]) -> None:
        kind, data = event.get("type"), _dict(event.get("data"))
        if kind == "assistant.turn_start":
            self._count_turn()
        elif kind == "assistant.usage":
            self._events_tokens = _plus(self._events_tokens, _copilot_tokens(data))
            self._take_model(data)
            self._show_running(self._events_tokens)
        elif kind == "assistant.message":
            self._take_model(data)
            output = _count(data.get("outputTokens"))
            if output is not None and self._events_tokens == _NOTHING:
                self._message_output = (self._message_output or 0) + output
                self._show_running(Usage(output_tokens=self._message_output))
        elif kind == "tool.execution_complete":
            if _dict(data.get("error")).get("code") == "denied":
                denials = (self._now.permission_denials or 0) + 1
                self._now = replace(self._now, permission_denials=denials)
        elif kind == "session.error":
            self._fail("session.error", data.get("message"))
        elif kind == "abort":
            self._fail("abort", data.get("reason"))
        elif kind == "result":
            self._take_result(event)

    def _take_model(self, data: dict[str, object]) -> None:
        model = _text(data.get("model"))
        if model is not None and not self._from_file:
            self._now = replace(self._now, models=_plus_name(self._now.models, model))

    def _show_running(self, tokens: Usage) -> None:
        if not self._from_file:  # the usage file, once read, is the complete figure
            self._set_tokens(tokens)

    def _take_result(self, event: dict[str, object]) -> None:
        self._take_session(event.get("sessionId"))
        # the result comes last: a run that printed no denial had none
        self._now = replace(self._now, permission_denials=self._now.permission_denials or 0)
        code = _count(event.get("exitCode"))
        if code and not self._now.cli_error:
            self._fail("exitCode", str(code))


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
            part = _dict(event.get("part"))
            counts = _dict(part.get("tokens"))
            cache = _dict(counts.get("cache"))
            reasoning = _count(counts.get("reasoning"))
            self._now = _plus(self._now, Usage(
                input_tokens=_count(counts.get("input")),
                output_tokens=_add(_count(counts.get("output")), reasoning),
                cache_read_tokens=_count(cache.get("read")),
                cache_write_tokens=_count(cache.get("write")),
                reasoning_tokens=reasoning, cost_usd=_usd(part.get("cost"))))
            self._count_turn()
        elif kind == "error":
            error = _dict(event.get("error"))
            self._fail("error", _text(_dict(error.get("data")).get("message")) or error.get("name"))


class GooseReader(UsageReader):
    """goose run --output-format stream-json (JSON Lines: message, notification, model_change,
    error, complete), per goose's source. It reports only a total token count (`complete`),
    which a Usage cannot hold without its split, and no cost or session: this reader gives the
    models (`model_change`) and cli_error (an `error` event; goose exits 0 after one).
    """

    name = "goose-json"

    def _take(self, event: dict[str, object]) -> None:
        kind = event.get("type")
        if kind == "model_change":
            model = _text(event.get("model"))
            if model is not None:
                self._now = replace(self._now, models=_plus_name(self._now.models, model))
        elif kind == "error":
            self._fail("error", event.get("error"))


READERS: dict[str, type[UsageReader]] = {
    reader.name: reader
    for reader in (ClaudeReader, CodexReader, GeminiReader, AiderReader, CopilotReader,
                   OpencodeReader, QwenReader, CursorReader, AmpReader, GooseReader)
}


def reader_for(name: str) -> UsageReader:
    """A fresh reader of the output format `name` (a key of READERS)."""
    reader = READERS.get(name)
    if reader is None:
        raise ValueError(f"{name!r} is not a usage reader; known: {', '.join(sorted(READERS))}")
    return reader()


@dataclass(frozen=True, slots=True)
class Price:
    """What a model costs, in USD per million tokens (aq.yaml `prices:`)."""

    input: float
    output: float
    cache_read: float | None = None  # None: cache reads are charged as input
    cache_write: float | None = None  # None: cache writes are charged as input


def priced(usage: Usage, prices: Mapping[str, Price]) -> Usage:
    """`usage` with cost_usd computed from `prices` when the CLI reported none and its tokens are
    known. Tokens are not split by model, so with several priced models the dearest prices them
    all: a budget is never under-counted. Left as is when no model of it has a price."""
    if usage.cost_usd is not None or usage.tokens is None:
        return usage
    found = [price for model in usage.models if (price := _price_of(model, prices)) is not None]
    if not found:
        return usage
    price = max(found, key=lambda item: item.input + item.output)
    read = price.input if price.cache_read is None else price.cache_read
    write = price.input if price.cache_write is None else price.cache_write
    cost = ((usage.input_tokens or 0) * price.input + (usage.output_tokens or 0) * price.output
            + (usage.cache_read_tokens or 0) * read + (usage.cache_write_tokens or 0) * write)
    # an absurd price (aq.yaml allows any finite number) must not make an infinite cost
    return replace(usage, cost_usd=cost / 1_000_000) if math.isfinite(cost) else usage


def _price_of(model: str, prices: Mapping[str, Price]) -> Price | None:
    """The price of `model`, also found under its name without claude's context suffix
    ("claude-opus-4-8[1m]") or without a provider prefix ("openai/gpt-4o")."""
    for name in (model, model.split("[", 1)[0], model.rsplit("/", 1)[-1]):
        if name in prices:
            return prices[name]
    return None


_PRICE_KEYS = ("input", "output", "cache_read", "cache_write")
_PRICE_EXAMPLE = "{input: 3, output: 15, cache_read: 0.3} (USD per million tokens)"


def parse_prices(raw: object, where: str) -> dict[str, Price]:
    """aq.yaml `prices: {model-name: {input: 3, output: 15, cache_read: 0.3}}`; `where` names it
    in errors (e.g. "aq.yaml: prices")."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected model names, each with {_PRICE_EXAMPLE}; got {raw!r}")
    prices: dict[str, Price] = {}
    for model, entry in raw.items():
        if not isinstance(model, str) or not model.strip():
            raise ConfigError(f"{where}: {model!r} is not a model name; write it as a string, "
                              f"e.g. \"{model}\": {_PRICE_EXAMPLE}")
        prices[model] = _parse_price(entry, f"{where}.{model}")
    return prices


def _parse_price(entry: object, where: str) -> Price:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: expected {_PRICE_EXAMPLE}, got {entry!r}")
    unknown = sorted(str(key) for key in entry if key not in _PRICE_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; known: {', '.join(_PRICE_KEYS)}")
    rates: dict[str, float | None] = {}
    for key in _PRICE_KEYS:
        value = entry.get(key)
        if value is None and key in ("input", "output"):
            raise ConfigError(f"{where}: needs {key}, e.g. {_PRICE_EXAMPLE}")
        try:
            rates[key] = None if value is None else parse_money(value)
        except ValueError as err:
            raise ConfigError(f"{where}.{key}: {err}, in USD per million tokens") from None
    return Price(input=rates["input"] or 0.0, output=rates["output"] or 0.0,
                 cache_read=rates["cache_read"], cache_write=rates["cache_write"])


def _loads(text: str) -> object:
    """The JSON value of `text`, or None: garbage, truncated JSON, nesting too deep, a number
    with more digits than Python converts."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _dict(value: object) -> dict[str, object]:
    """`value` if it is a JSON object, else an empty one (so lookups chain without checks)."""
    return value if isinstance(value, dict) else {}


def _count(value: object) -> int | None:
    """A token count: a whole number from 0 to _MAX_TOKENS (a float such as 7.0 too), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():  # also rules out inf and nan
        value = int(value)
    return value if isinstance(value, int) and 0 <= value <= _MAX_TOKENS else None


def _usd(value: object) -> float | None:
    """An amount of dollars: a number from 0 to _MAX_USD (not nan), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if 0 <= value <= _MAX_USD else None


def _text(value: object) -> str | None:
    """A string's first line, stripped, cut to _MAX_TEXT characters; None if empty or no string."""
    if not isinstance(value, str):
        return None
    return _line(value) or None


def _line(text: str) -> str:
    return text.lstrip().partition("\n")[0].strip()[:_MAX_TEXT]


def _names(value: object) -> tuple[str, ...]:
    """Model names from a list: strings only, each once, at most _MAX_MODELS."""
    names: tuple[str, ...] = ()
    if isinstance(value, list | tuple):
        for item in value:
            name = _text(item)
            if name is not None:
                names = _plus_name(names, name)
    return names


def _plus_name(names: tuple[str, ...], name: str) -> tuple[str, ...]:
    return names if name in names or len(names) >= _MAX_MODELS else (*names, name)


def _first(raw: dict[str, object], *keys: str) -> int | None:
    """The first of `keys` that holds a count (CLIs spell the same field differently)."""
    for key in keys:
        value = _count(raw.get(key))
        if value is not None:
            return value
    return None


def _message_tokens(raw: dict[str, object], prompt_counts_cache: bool) -> Usage:
    """An Anthropic-style usage object (snake_case, or camelCase as in modelUsage and cursor)."""
    cache_read = _first(raw, "cache_read_input_tokens", "cacheReadInputTokens", "cacheReadTokens")
    prompt = _first(raw, "input_tokens", "inputTokens")
    return Usage(
        input_tokens=_less(prompt, cache_read) if prompt_counts_cache else prompt,
        output_tokens=_first(raw, "output_tokens", "outputTokens"),
        cache_read_tokens=cache_read,
        cache_write_tokens=_first(raw, "cache_creation_input_tokens", "cacheCreationInputTokens",
                                  "cacheWriteTokens"))


def _copilot_tokens(raw: dict[str, object]) -> Usage:
    """Copilot's {inputTokens, outputTokens, cacheReadTokens, cacheWriteTokens, reasoningTokens},
    whose inputTokens include the cache reads and writes."""
    read, write = _count(raw.get("cacheReadTokens")), _count(raw.get("cacheWriteTokens"))
    return Usage(input_tokens=_less(_less(_count(raw.get("inputTokens")), read), write),
                 output_tokens=_count(raw.get("outputTokens")), cache_read_tokens=read,
                 cache_write_tokens=write, reasoning_tokens=_count(raw.get("reasoningTokens")))


def _result_error(event: dict[str, object]) -> str | None:
    """A claude-like result's failure: its subtype when not "success" (with qwen's error
    message), else is_error's text."""
    subtype = _text(event.get("subtype"))
    if subtype is not None and subtype != "success":
        detail = _text(_dict(event.get("error")).get("message"))
        return _line(f"{subtype}: {detail}") if detail else subtype
    if event.get("is_error") is True:
        errors = event.get("errors")
        first = errors[0] if isinstance(errors, list) and errors else None
        return _line(f"is_error: {_text(event.get('result')) or _text(first) or 'no detail'}")
    return None


def _gemini_error(error: dict[str, object]) -> str:
    """The detail of Gemini's error object, whose message is often the API's error as JSON."""
    message = error.get("message")
    inner = (_dict(_dict(_loads(message)).get("error"))
             if isinstance(message, str) and message.lstrip().startswith("{") else {})
    detail = _text(inner.get("message")) or _text(message) or _text(error.get("type"))
    code = error.get("code")
    suffix = f" (code {code})" if isinstance(code, int | str) and not isinstance(code, bool) else ""
    return _line(f"{detail or 'no detail'}{suffix}")


def _add(a: _Number | None, b: _Number | None) -> _Number | None:
    """a + b where unknown + unknown stays unknown, and unknown + x is x."""
    if a is None:
        return b
    return a if b is None else a + b


def _less(a: _Number | None, b: _Number | None) -> _Number | None:
    """a - b, never below 0; unknown - x stays unknown, and a - unknown is a."""
    if a is None or b is None:
        return a
    return a - min(a, b)


def _total(values: Iterator[int | None]) -> int | None:
    total: int | None = None
    for value in values:
        total = _add(total, value)
    return total


def _plus(a: Usage, b: Usage) -> Usage:
    """The tokens and cost of a and b summed; every other field is a's."""
    return replace(
        a,
        input_tokens=_add(a.input_tokens, b.input_tokens),
        output_tokens=_add(a.output_tokens, b.output_tokens),
        cache_read_tokens=_add(a.cache_read_tokens, b.cache_read_tokens),
        cache_write_tokens=_add(a.cache_write_tokens, b.cache_write_tokens),
        reasoning_tokens=_add(a.reasoning_tokens, b.reasoning_tokens),
        cost_usd=_add(a.cost_usd, b.cost_usd),
    )


def _with_tokens(target: Usage, source: Usage) -> Usage:
    """`target` with the token fields of `source` (cost and the rest stay target's)."""
    return replace(target, input_tokens=source.input_tokens, output_tokens=source.output_tokens,
                   cache_read_tokens=source.cache_read_tokens,
                   cache_write_tokens=source.cache_write_tokens,
                   reasoning_tokens=source.reasoning_tokens)
