"""What models cost (aq.yaml `prices:`), and a run's cost from them when its CLI said none."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

from aq.core.durations import parse_money
from aq.core.usage import Usage
from aq.errors import ConfigError


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
