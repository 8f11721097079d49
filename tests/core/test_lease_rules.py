"""A worker's own lease rules: how often it renews, when it stops its attempts, and when a
lease held elsewhere counts as expired or as one a draining worker waits for (DESIGN §5)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from aq.core.leases import (
    expired,
    heartbeat_every,
    look_is_fresh,
    may_expire,
    renew_deadline,
    unrenewed,
)

SECONDS = st.floats(min_value=1.0, max_value=86_400.0, allow_nan=False)


def test_the_heartbeat_is_the_one_asked_for_else_twice_a_ttl() -> None:
    """An interval given (command line or aq.yaml) wins; without one a lease renews twice a
    TTL (each renewal is a push a forge counts)."""
    assert heartbeat_every(600.0, None) == 300.0
    assert heartbeat_every(600.0, 30.0) == 30.0


def test_the_renew_deadline_is_two_heartbeats_before_the_ttl_and_never_past_half_of_it() -> None:
    """A holder stops its own attempts two heartbeats before the TTL, or at half the TTL when
    heartbeats are so far apart that two of them would leave less; renewing only twice a TTL
    (the default, a failed renewal tried again soon), a quarter of the TTL before it."""
    assert renew_deadline(600.0, 150.0) == 300.0
    assert renew_deadline(600.0, 30.0) == 540.0
    assert renew_deadline(8.0, 1.0) == 6.0
    assert renew_deadline(8.0, 3.0) == 4.0
    assert renew_deadline(600.0, 300.0) == 450.0


@given(ttl=SECONDS, fraction=st.floats(min_value=0.01, max_value=1.0))
def test_a_holder_always_stops_before_an_observer_could_see_its_lease_expire(
        ttl: float, fraction: float) -> None:
    """Whatever the heartbeat interval, the renew deadline comes before the TTL runs out."""
    deadline = renew_deadline(ttl, heartbeat_every(ttl, ttl * fraction))
    assert ttl / 2 <= deadline < ttl


def test_a_holders_own_silence_runs_from_its_last_renewal_or_its_claim_whichever_is_later() -> None:
    """Observers start counting at the claim, so a claim younger than the last renewal counts
    from itself; an offline claim counts only once the remote took it."""
    assert unrenewed(100.0, renewed_at=90.0, claimed_at=50.0, landed_at=None, offline=False) == 10.0
    assert unrenewed(100.0, renewed_at=40.0, claimed_at=95.0, landed_at=None, offline=False) == 5.0
    assert unrenewed(100.0, renewed_at=40.0, claimed_at=10.0, landed_at=None, offline=True) is None
    assert unrenewed(100.0, renewed_at=40.0, claimed_at=10.0, landed_at=70.0, offline=True) == 30.0
    assert unrenewed(100.0, renewed_at=80.0, claimed_at=10.0, landed_at=70.0, offline=True) == 20.0


def test_a_lease_expires_at_exactly_the_ttl_of_silence() -> None:
    """A lease watched unrenewed for the whole TTL is expired; a moment less, it holds."""
    assert expired(600.0, 600.0)
    assert not expired(599.9, 600.0)


def test_a_drain_waits_for_a_lease_not_yet_seen_renewed_or_silent_for_two_heartbeats() -> None:
    """A lease renewed lately is no reason to wait; one never seen renewed or silent for more
    than two heartbeats may expire, so the draining worker stays to take it back."""
    assert not may_expire(2.0, True, heartbeat_interval=1.5)
    assert may_expire(3.1, True, heartbeat_interval=1.5)
    assert may_expire(0.0, False, heartbeat_interval=1.5)


def test_the_heartbeats_looked_up_serve_for_a_quarter_interval_and_at_most_five_seconds() -> None:
    """Between two look-ups the last figures are aged instead of fetched again."""
    assert look_is_fresh(100.0, 100.2, heartbeat_interval=1.0)
    assert not look_is_fresh(100.0, 100.25, heartbeat_interval=1.0)
    assert look_is_fresh(100.0, 104.9, heartbeat_interval=150.0)
    assert not look_is_fresh(100.0, 105.0, heartbeat_interval=150.0)
