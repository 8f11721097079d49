"""Lease arithmetic: how long a lease has gone unrenewed, as one machine could see it (DESIGN §5).

An observer notes, on its own monotonic clock, when each holder's heartbeat last advanced. Its
silence counts only while the observer could see the remote: a watch of the remote is unbroken
while observations that saw it follow each other with no failed fetch between them and no
longer pause than `gap`. When a watch starts (the first look, the first after an outage, the
first after nobody on the machine looked for a while), every lease's silence starts from it:
whatever the holders did meanwhile is unknown, and they get a full TTL to be seen again.

A holder has rules of its own, on its own monotonic clock: how often it renews (the heartbeat
interval) and how long it may go unrenewed before it stops its attempts (the renew deadline),
well before any observer could count its lease as expired.

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


# --- a worker's own rules, on its monotonic clock ---------------------------------------------

def heartbeat_every(lease_ttl: float, asked: float | None) -> float:
    """How often a held lease is renewed: as asked (command line, then aq.yaml), else twice a
    TTL: each renewal is a push, which a forge counts (a failed one is tried again within a
    twentieth of the TTL, see aq.store.beats)."""
    return asked or lease_ttl / 2


def renew_deadline(lease_ttl: float, heartbeat_interval: float) -> float:
    """How long a holder may go without a renewal reaching the remote before it stops its own
    attempts: well before any observer could see the lease as expired. Two heartbeats early,
    and never later than half the TTL; renewed only twice a TTL (the default), with failed
    renewals tried again soon, a quarter of the TTL early."""
    if heartbeat_interval >= lease_ttl / 2:
        return lease_ttl * 3 / 4
    return max(lease_ttl - 2 * heartbeat_interval, lease_ttl / 2)


def unrenewed(now: float, renewed_at: float, claimed_at: float, landed_at: float | None, *,
              offline: bool) -> float | None:
    """Seconds the holder's own lease has gone unrenewed at `now`: from the later of its last
    renewal and its claim (observers start counting when they first see the claim). An offline
    claim is a lease only once the remote took it (`landed_at`); before that, None."""
    start = claimed_at
    if offline:
        if landed_at is None:
            return None  # the remote has not seen this claim: no one counts it as a lease
        start = landed_at
    return now - max(renewed_at, start)


def expired(silent: float, lease_ttl: float) -> bool:
    """A lease held elsewhere is expired once it has gone `lease_ttl` unrenewed (as watched)."""
    return silent >= lease_ttl


def may_expire(silent: float, seen_renewed: bool, heartbeat_interval: float) -> bool:
    """A lease that may yet expire, so a draining worker waits for it: one not yet seen renewed,
    or one unrenewed for two heartbeats."""
    return silent > 2 * heartbeat_interval or not seen_renewed


def look_is_fresh(looked_at: float, now: float, heartbeat_interval: float) -> bool:
    """Whether heartbeats fetched at `looked_at` still serve at `now` (aged by the time passed):
    for a quarter heartbeat interval, at most 5s. A renewal noticed late only makes a lease look
    younger, so this never takes a job back early; it may take one back up to that much later."""
    return now - looked_at < min(heartbeat_interval / 4, 5.0)
