"""Lease arithmetic: how long a lease has gone unrenewed, as one machine could see it (DESIGN §5).

An observer notes, on its own monotonic clock, when each holder's heartbeat last advanced. Its
silence counts only while the observer could see the remote: a watch of the remote is unbroken
while observations that saw it follow each other with no failed fetch between them and no
longer pause than `gap`. When a watch starts (the first look, the first after an outage, the
first after nobody on the machine looked for a while), every lease's silence starts from it:
whatever the holders did meanwhile is unknown, and they get a full TTL to be seen again.

No I/O and no clock here: the caller passes `now`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Watch:
    """An unbroken watch of the remote: since when, and when it was last seen."""

    since: float
    last: float


def watch_after(previous: Watch | None, now: float, *, dark: bool, gap: float) -> Watch:
    """The watch after an observation at `now` that saw the remote. It starts again at `now`
    when the remote was dark since the last one (`dark`: a fetch failed), when the last one is
    more than `gap` seconds ago (nobody looked: an outage may have come and gone), or when
    there was none (or `now` is before it: another boot's clock)."""
    if previous is None or dark or not previous.last <= now <= previous.last + gap:
        return Watch(now, now)
    return Watch(previous.since, now)


def silence(last_sign: float, watch: Watch, now: float) -> float:
    """Seconds a lease counts as unrenewed at `now`: since the last sign of its holder (its
    last renewal seen, else the first time the lease was seen), but only within the watch."""
    return max(0.0, now - max(last_sign, watch.since))


def watch_gap(lease_ttl: float, poll: float) -> float:
    """How far apart two observations may be and still count as one watch: half the TTL, so
    that an outage hidden between two looks cannot by itself make a lease renewed every
    heartbeat (a quarter of the TTL by default) look a TTL silent; and at least three polls,
    so that a worker looking at its own pace keeps its watch."""
    return max(lease_ttl / 2, 3 * poll)
