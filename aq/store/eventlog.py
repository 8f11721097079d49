"""A job's event log, queue/.events/<id>.jsonl: one JSON object a line, in causal order."""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime
from pathlib import Path

from aq.core.events import Event, parse_iso
from aq.errors import UnsafePath
from aq.infra.confine import read_regular


def read_events(path: Path) -> list[Event]:
    try:
        raw = read_regular(path)
    except (FileNotFoundError, UnsafePath):  # a link is never read: the snapshot names it
        return []
    events: list[Event] = []
    for line in raw.splitlines():
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a torn line from a crash; `aq lint` reports it
        if isinstance(event, dict):
            events.append(event)
    return events  # file order is causal order; timestamps of different machines may disagree


def parse_time(text: object) -> datetime | None:
    return _parse_time(text) if isinstance(text, str) else None


@functools.lru_cache(maxsize=1 << 16)  # a listing parses every job's added time on every read
def _parse_time(text: str) -> datetime | None:
    try:
        moment = parse_iso(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def bad_event_lines(path: Path) -> list[int]:
    """Line numbers (1-based) of lines that are not JSON objects with a readable `ts`."""
    bad: list[int] = []
    try:
        raw = read_regular(path)
    except UnsafePath:  # not an event log aq reads: `aq lint` names it as such
        return bad
    for number, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            bad.append(number)
            continue
        if not isinstance(event, dict) or parse_time(event.get("ts")) is None:
            bad.append(number)
    return bad
