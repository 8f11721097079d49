"""What an agent CLI says a run used: tokens, cost, its session, and its own failure signal.

Each CLI reports usage in a shape of its own; its reader (aq.infra.usage) turns it into one
`Usage` whose figures mean the same whatever the CLI:

- `input_tokens` never counts cache reads: where a CLI's prompt count includes them (codex,
  gemini, qwen, copilot) they are taken out, so input + cache read + cache write is the whole
  prompt. Only aider logs no split: its input counts them and cache_read_tokens stays None;
- `output_tokens` counts reasoning (thinking) tokens: where a CLI reports them apart (gemini,
  opencode, qwen) they are added; `reasoning_tokens` says how many were reasoning, where known;
- `cost_usd` is the CLI's own figure, never computed by a reader; `aq.core.prices.priced`
  fills it from aq.yaml `prices:` when the CLI reports none.

The functions below take a figure from a JSON value: one of the wrong type, below 0 or beyond
any real run gives None (unknown), never an error.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

_MAX_TOKENS = 10**12  # no run uses more; a bigger count is garbage (and would overflow a float)
_MAX_USD = 1e7
_MAX_TEXT = 200  # a session id, model name or cli_error line is cut to this
_MAX_MODELS = 32

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
            input_tokens=count(raw.get("input_tokens")),
            output_tokens=count(raw.get("output_tokens")),
            cache_read_tokens=count(raw.get("cache_read_tokens")),
            cache_write_tokens=count(raw.get("cache_write_tokens")),
            reasoning_tokens=count(raw.get("reasoning_tokens")),
            cost_usd=usd(raw.get("cost_usd")),
            models=model_names(raw.get("models")),
            session=short_text(raw.get("session")),
            turns=count(raw.get("turns")),
            cli_error=short_text(raw.get("cli_error")),
            permission_denials=count(raw.get("permission_denials")),
        )
        return None if usage == NOTHING else usage

    def minus(self, earlier: Usage) -> Usage:
        """This run's figures from a running total and the total before the run (codex resume
        reports the thread's total): tokens and cost subtracted, never below 0; the rest as is."""
        run: dict[str, Any] = {name: less(getattr(self, name), getattr(earlier, name))
                               for name in _SUMMED}
        return replace(self, **run)


# The fields a run adds to a total (and a resumed run's total subtracts from): tokens and cost.
_TOKENS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
           "reasoning_tokens")
_SUMMED = (*_TOKENS, "cost_usd")
_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
           "reasoning_tokens", "cost_usd", "models", "session", "turns", "cli_error",
           "permission_denials")
NOTHING = Usage()


def count(value: object) -> int | None:
    """A token count: a whole number from 0 to _MAX_TOKENS (a float such as 7.0 too), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():  # also rules out inf and nan
        value = int(value)
    return value if isinstance(value, int) and 0 <= value <= _MAX_TOKENS else None


def usd(value: object) -> float | None:
    """An amount of dollars: a number from 0 to _MAX_USD (not nan), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if 0 <= value <= _MAX_USD else None


def short_text(value: object) -> str | None:
    """A string's first line, stripped, cut to _MAX_TEXT characters; None if empty or no string."""
    if not isinstance(value, str):
        return None
    return one_line(value) or None


def one_line(text: str) -> str:
    return text.lstrip().partition("\n")[0].strip()[:_MAX_TEXT]


def model_names(value: object) -> tuple[str, ...]:
    """Model names from a list: strings only, each once, at most _MAX_MODELS."""
    names: tuple[str, ...] = ()
    if isinstance(value, list | tuple):
        for item in value:
            name = short_text(item)
            if name is not None:
                names = plus_model(names, name)
    return names


def plus_model(names: tuple[str, ...], name: str) -> tuple[str, ...]:
    return names if name in names or len(names) >= _MAX_MODELS else (*names, name)


def add(a: _Number | None, b: _Number | None) -> _Number | None:
    """a + b where unknown + unknown stays unknown, and unknown + x is x."""
    if a is None:
        return b
    return a if b is None else a + b


def less(a: _Number | None, b: _Number | None) -> _Number | None:
    """a - b, never below 0; unknown - x stays unknown, and a - unknown is a."""
    if a is None or b is None:
        return a
    return a - min(a, b)


def total(values: Iterator[int | None]) -> int | None:
    """The known values summed; None when none is known."""
    summed: int | None = None
    for value in values:
        summed = add(summed, value)
    return summed


def plus(a: Usage, b: Usage) -> Usage:
    """The tokens and cost of a and b summed; every other field is a's."""
    summed: dict[str, Any] = {name: add(getattr(a, name), getattr(b, name)) for name in _SUMMED}
    return replace(a, **summed)


def with_tokens(target: Usage, source: Usage) -> Usage:
    """`target` with the token fields of `source` (cost and the rest stay target's)."""
    return replace(target, **{name: getattr(source, name) for name in _TOKENS})

