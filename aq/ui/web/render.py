"""The templates of `aq web` (Jinja2, every value escaped) and the filters they share."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any

from aq.core.durations import format_duration


@functools.cache
def _environment() -> Any:
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("aq.ui.web", "templates"),
                      autoescape=select_autoescape(default=True), trim_blocks=True,
                      lstrip_blocks=True)
    env.filters.update(duration=_duration, since=_since, usd=_usd, short=_short)
    return env


def render(name: str, values: dict[str, Any]) -> str:
    return str(_environment().get_template(name).render(**values))


def _duration(seconds: float | None) -> str:
    return "" if seconds is None else format_duration(seconds)


def _since(moment: str | datetime | None, now: datetime) -> str:
    """How long ago `moment` (ISO text or a datetime) was, as a person reads it."""
    if moment is None:
        return ""
    if isinstance(moment, str):
        try:
            moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
        except ValueError:
            return ""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return format_duration((now - moment).total_seconds())


def _usd(value: float | None) -> str:
    if value is None:
        return ""
    return f"${value:.2f}" if value >= 0.01 else f"${value:.4f}"


def _short(text: str | None, width: int = 80) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[:width - 1] + "\N{HORIZONTAL ELLIPSIS}"
