"""aq.yaml `alerts:`: when a trouble of the queue is worth telling a person (aq.usecases.alerts).

Each kind has a threshold with a default that suits a queue of agent jobs, and `off` switches
the kind off. Parsed here, in the core, because the config loader reads it on every command and
the alert read model needs it without loading the config's machinery twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aq.core.durations import DURATION_EXAMPLES, parse_duration

STALLED, FAILURE_SPIKE, BUDGET, MACHINE_OFFLINE, DEAD_LETTER = (
    "stalled", "failure_spike", "budget", "machine_offline", "dead_letter")
KINDS = (STALLED, FAILURE_SPIKE, BUDGET, MACHINE_OFFLINE, DEAD_LETTER)
_KEYS = ("stall", "failure_spike", "offline", "budget", "dead_letter")
_EXAMPLE = "expected {stall: 30m, failure_spike: 5/1h, offline: 30m, budget: on, dead_letter: on}"
_SPIKE = re.compile(r"^\s*(\d+)\s*/\s*(\S+)\s*$")


@dataclass(frozen=True, slots=True)
class AlertRules:
    """The thresholds; None switches that kind off."""

    stall: float | None = 1800.0  # a building job showing no sign of progress this long
    failure_spike: tuple[int, float] | None = (5, 3600.0)  # failures of one engine/profile, window
    offline: float | None = 1800.0  # a machine's heartbeat silent this long (at least 2 lease_ttl)
    budget: bool = True  # the queue's daily budget crossed, a job stopped at its budget
    dead_letter: bool = True  # a job in dead_letter

    def offline_after(self, lease_ttl: float) -> float | None:
        """How long a machine's heartbeat may be silent before it counts as offline: as set, but
        never under two lease TTLs, as an idle machine beats only once a lease TTL."""
        return None if self.offline is None else max(self.offline, 2 * lease_ttl)


def parse_alert_rules(raw: object) -> AlertRules:
    """`alerts:` of aq.yaml (None: the defaults). A ValueError names the key and what was
    expected; the config loader adds the file."""
    if raw is None:
        return AlertRules()
    if not isinstance(raw, dict):
        raise ValueError(f"key 'alerts': {_EXAMPLE}")
    for key in raw:
        if key not in _KEYS:
            raise ValueError(f"unknown key 'alerts.{key}'; known: {', '.join(_KEYS)}")
    values: dict[str, object] = {}
    for key, value in raw.items():
        try:
            values[key] = _parse(key, value)
        except ValueError as err:
            raise ValueError(f"key 'alerts.{key}': {err}") from None
    return AlertRules(**values)  # type: ignore[arg-type]


def _parse(key: str, value: object) -> object:
    off = value is False or (isinstance(value, str) and value.strip().lower() == "off")
    if key in ("budget", "dead_letter"):
        if value is True or (isinstance(value, str) and value.strip().lower() == "on"):
            return True
        if off:
            return False
        raise ValueError(f"{value!r} is neither on nor off")
    if off:
        return None
    if key == "failure_spike":
        return _spike(value)
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"{value!r} is no time; expected {DURATION_EXAMPLES}, or off")
    return seconds


def _spike(value: object) -> tuple[int, float]:
    """`5/1h`: five failures within an hour."""
    found = _SPIKE.match(value) if isinstance(value, str) else None
    if found is None or int(found.group(1)) < 1:
        raise ValueError(f"{value!r} is not a count of failures in a window, such as 5/1h, or off")
    window = parse_duration(found.group(2))
    if window <= 0:
        raise ValueError(f"{value!r}: the window must be longer than 0s, such as 5/1h")
    return int(found.group(1)), window
