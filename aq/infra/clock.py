"""The wall clock, read here: the core is handed `now` and never reads it itself."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    """This moment, in UTC."""
    return datetime.now(UTC)
