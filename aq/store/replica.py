"""This clone kept in step with the queue's remote: every change is a compare-and-swap on it.

A transaction fetches, brings the clone to the remote's tip, replays the work the remote has
not taken yet, applies its change and pushes. A rejected push means another machine moved
first: the clone is realigned and the change decided again on the new tip. Work done while the
remote cannot be reached stays unpushed, and is replayed until a push of it lands.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

from aq.errors import AqError, PushUncertain, RemoteBusy, RemoteRefused, RemoteUnreachable
from aq.infra.files import write_atomic
from aq.store.local import Local
from aq.store.recovery import Adoption, HalfMoves, Salvage
from aq.store.tx import Tx, Unpushed

if TYPE_CHECKING:
    from aq.store.archive_ref import ArchiveRef
    from aq.store.clone import Clone
    from aq.store.layout import Layout
    from aq.store.sync import Push, Remote

T = TypeVar("T")
Replay = Callable[[T], Callable[[Tx], object] | None]  # a result -> its change replayed later, if any

PUSH_TRIES = 40
FETCHED = "fetched.json"  # in the state folder: when a process of the clone last fetched
CONFIRM_TRIES = 4
# After the remote refused a push (a hook, a rate limit): no push for this long, doubled with
# each refusal in a row, up to the longest; the change waits here meanwhile, as if offline.
REFUSAL_WAIT = 5.0
REFUSAL_WAIT_MAX = 600.0


class Delivery(StrEnum):
    """Where a transaction's change is, as far as the remote goes."""

    LOCAL = "local"  # no remote: the commit is all there is
    LANDED = "landed"  # on the remote (pushed, or nothing new to push while it answered)
    UNREACHABLE = "unreachable"  # the remote did not answer: kept here, pushed when it does
    UNCERTAIN = "uncertain"  # the remote stopped answering during the push: it may have landed


@dataclass(frozen=True, slots=True)
class Synced(Generic[T]):
    """What one transaction did: its change's result, where the change is, and how many
    pieces of work this clone still holds that the remote has not taken (this change's too)."""

    value: T
    delivery: Delivery
    unpushed: int = 0

    @property
    def confirmed(self) -> bool:
        """The remote has the change (or there is none): nothing waits for it to show."""
        return self.delivery in (Delivery.LOCAL, Delivery.LANDED)


class Replica:
    """What this process knows of the clone's standing with the remote, and the push loop."""

    def __init__(self, local: Local, clock: Callable[[], datetime],
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.local = local
        self.clock = clock  # the time a dropped file is adopted at
        self.monotonic = monotonic
        self.refusals = 0  # pushes the remote refused in a row
        self.held_until = 0.0  # no push before this (monotonic), after a refusal
        self.refused_said = ""  # the remote's words when it last refused
        self.unreachable_said = ""  # git's line when the last fetch failed
        self.unpushed: list[Unpushed] = []  # replayed on the tip until a push of it lands
        self.remote_answered = True  # False: the last sync got no answer (or no confirmation)
        self.fetches_failed = 0  # by this process: lease figures from before one are out of date
        self.notices: list[str] = []  # for a person: said once by the CLI or the worker
        self.looked = True  # the last sync fetched itself (False: it read a sibling's fetch)
        self.half_moves = HalfMoves(local.layout.state_dir)
        self.salvage = Salvage(local.layout)
        self.adoption = Adoption(local.layout, local.inbox)
        # a worker's: asked as a push leaves, what to tell of the leases its commits named
        # once it landed (a renewal as of when it left, on the worker's clock)
        self.on_renewal: Callable[[], Callable[[frozenset[str]], None]] | None = None
        self.archive: ArchiveRef | None = None  # the archive's checkout, kept at its fetched tip

    def transact(self, remote: Remote, change: Callable[[Tx], T], message: str,
                 describe: Callable[[T], str] | None, replay: Replay[T] | None,
                 lock: Callable[[], AbstractContextManager[object]],
                 settle: Callable[[Synced[T]], None] | None = None,
                 fresh: float = 0.0) -> Synced[T]:
        """Apply `change` on the remote's tip and push it; see Queue.transact_synced. Each try
        holds the clone's `lock`; a try that lost a race lets it go before waiting and deciding
        again, so the clone's other writers are not held up by one transaction's retries.
        `settle` runs under the lock of the try that ended it. `fresh`: the first try fetches
        only if no process of this clone fetched within that many seconds (see `sync`)."""
        from aq.store.sync import Push  # lazily: `aq next` loads this module, never sync

        for attempt in range(PUSH_TRIES):
            with lock(), self.half_moves.changing() as left_dirty:
                tried = self._try(remote, change, message, describe, replay, left_dirty,
                                  fresh if attempt == 0 else 0.0)
                if isinstance(tried, Synced):
                    if settle is not None:
                        settle(tried)
                    return tried
            if tried is not Push.REFUSED:
                _backoff(attempt)  # then decide again on the remote's tip
        raise RemoteBusy(f"gave up after {PUSH_TRIES} tries: other machines kept pushing first; "
                         "try again")

    def _try(self, remote: Remote, change: Callable[[Tx], T], message: str,
             describe: Callable[[T], str] | None, replay: Replay[T] | None,
             left_dirty: bool, fresh: float) -> Synced[T] | Push:
        """One try, under the lock: where the change is, or why it did not land (REJECTED:
        lost to another machine, or the push never arrived; REFUSED, with `replay`: kept, and
        held back from the next try's push)."""
        from aq.store.sync import Push  # lazily: `aq next` loads this module, never sync

        self.local.carry_anew()  # what this try commits is what its push carries
        replayed = bool(self.unpushed)
        held = self.held_back()
        if held and replay is None:
            raise RemoteRefused(f"the remote {remote.name!r} refused a push moments ago: "
                                "nothing changed; try again in a few minutes")
        # held back after a refusal: worked on as if offline, sent once the wait is over
        reachable = not held and self.sync(remote, check_tree=left_dirty, fresh=fresh)
        if not reachable and replay is None:
            raise RemoteUnreachable(f"cannot reach the queue's remote {remote.name!r}"
                                    f"{_said(self.unreachable_said)}: "
                                    "nothing changed; try again when it answers")
        commits = self.local.commits
        result = self.local.apply(change, message, describe, exact=True, online=reachable)
        if self.local.commits == commits and not (replayed and reachable):  # nothing to push
            return self._synced(result, Delivery.LANDED if reachable else Delivery.UNREACHABLE)
        if not reachable:
            self._keep(replay, result)
            return self._synced(result, Delivery.UNREACHABLE)
        delivery = self._pushed(remote, result, replay)
        if isinstance(delivery, Delivery):
            return self._synced(result, delivery)
        # lost to another machine, refused, or the push never arrived: take our refused
        # commits off HEAD now. Left there, a next try whose fetch fails would build on
        # them and find its work "already done" in a commit the remote never took.
        self._note_kept(_clone(remote).align())
        if delivery is Push.REFUSED and replay is None:
            raise RemoteRefused(f"the remote {remote.name!r} refused the push "
                                f"({self.refused_said}): nothing changed; try again later")
        return delivery

    def _synced(self, result: T, delivery: Delivery) -> Synced[T]:
        return Synced(result, delivery, len(self.unpushed))

    def _pushed(self, remote: Remote, result: T, replay: Replay[T] | None) -> Delivery | Push:
        """Push HEAD. Where that leaves the change: landed, or (the remote stopped answering)
        uncertain and kept unpushed; else why it did not land: REJECTED (decide again on the
        remote's tip) or REFUSED (hold pushes back for a while)."""
        from aq.store.sync import Push
        renew = self.on_renewal() if self.on_renewal is not None else None
        pushed, said = remote.push()
        if pushed is Push.REFUSED:
            self._refused(said, said_here=replay is None)
            return Push.REFUSED
        landed = self._confirm(remote) if pushed is Push.TRANSPORT else pushed is Push.OK
        if landed:
            self.unpushed.clear()
            self.refusals = 0
            if renew is not None and self.local.signed:
                renew(frozenset(self.local.carried))
            return Delivery.LANDED
        if landed is None:
            head = remote.head() or ""
            if replay is None:
                raise PushUncertain(
                    f"the remote {remote.name!r} stopped answering during the push; it may "
                    "or may not have taken the change", result, head)
            for work in self.unpushed:  # replayed into this HEAD: landed if it lands
                work.commit = head
            self._keep(replay, result, head)
            return Delivery.UNCERTAIN
        return Push.REJECTED

    def held_back(self) -> bool:
        return self.monotonic() < self.held_until

    def _refused(self, said: str, *, said_here: bool) -> None:
        """The remote said no for a reason of its own: no push for a while, longer each time in
        a row (with jitter, so a fleet does not come back at once); said once to a person
        (unless the error of the command at hand says it: `said_here`)."""
        import random

        self.refusals += 1
        wait = min(REFUSAL_WAIT_MAX, REFUSAL_WAIT * 2 ** (self.refusals - 1))
        self.held_until = self.monotonic() + wait * random.uniform(0.75, 1.25)
        self.refused_said = said or "no reason given"
        if not said_here:
            _note(self.notices, f"the remote refuses pushes ({self.refused_said}): a limit of the "
                                "server, not a lost race; aq waits before each next push, longer "
                                "each time (up to 10m), and keeps its results until one lands")

    def sync(self, remote: Remote, check_tree: bool = True, fresh: float = 0.0) -> bool:
        """Fetch, then bring this clone to the remote's tip and replay the work it has not taken
        yet. `check_tree`: first put back half a move a process killed mid-transaction left.
        `fresh`: no fetch when another process of this clone (a sibling worker) fetched within
        that many seconds: the clone's tip is that recent (the `looked` of this sync is then
        False).
        Each fetch is a read a forge counts (GitHub: 15 a second per repository)."""
        self.looked = not (fresh > 0 and _sibling_fetched(self.local.layout.state_dir,
                                                          self.monotonic(), fresh))
        self.remote_answered = self.fetch(remote) if self.looked else True
        if not self.remote_answered:
            return False
        clone = _clone(remote)
        self._drop_landed(remote)
        head, tip, archive = remote.tips()  # read once: nothing below moves HEAD before the align
        heads = (head, tip)
        mine = {work.commit for work in self.unpushed if work.commit}
        salvaged = self.salvage.of_the_dead(clone, *heads, mine=mine)
        if check_tree:
            self.half_moves.put_back(clone)
        self.unpushed += self.adoption.dropped(clone, self.clock())
        seen = self.local.inbox.unchanged()
        self._note_kept(clone.align(heads))  # git's own inbox changes are no dropped files either
        self.local.inbox.own_change(seen)
        self._catch_up_archive(remote, archive)
        self.unpushed += salvaged
        # work stays listed until a push of it lands: a replay that loses a race is replayed again
        for work in list(self.unpushed):
            self.local.apply(work.replay, work.message, None, exact=True)
        return True

    def fetch(self, remote: Remote) -> bool:
        """Fetch from the remote (under the lock). One that fails is noted for every lease
        observer of this machine: while the remote is out of sight, no lease goes silent."""
        fetched = remote.fetch()
        if fetched:
            _note_fetch(self.local.layout.state_dir, self.monotonic())
            return True
        self.unreachable_said = fetched.said
        self.lost_sight()
        return False

    def lost_sight(self) -> None:
        from aq.store.sync import LeaseObserver  # lazily: see `_pushed`

        self.fetches_failed += 1
        LeaseObserver(self.local.layout.state_dir / "leases.json").lost_sight()

    def refresh(self, remote: Remote, timeout: float) -> bool:
        """Fetch, and fast-forward this clone to the remote's tip; nothing else (see
        Queue.refresh_from_remote). False when the remote does not answer."""
        with self.local.lock(timeout):
            if not self.fetch(remote):
                return False
            head, tip, archive = remote.tips()
            if head and tip and head != tip and remote.is_ancestor(head, tip):
                self._note_kept(_clone(remote).align((head, tip)))
            self._catch_up_archive(remote, archive)
        return True

    def _catch_up_archive(self, remote: Remote, tip: str | None) -> None:
        """Bring queue/.archive to the archive's tip as fetched (a read of one small file when
        it is there already). Trouble with it is said once and never stops a sync."""
        self.archive = self.archive or _archive_of(self.local.layout, remote)
        try:  # not waiting: the archive's lock held means its holder catches up (`put`)
            self.archive.catch_up(tip, wait=False)
        except (AqError, OSError) as err:
            _note(self.notices, f"the archive's checkout in queue/.archive could not be brought "
                                f"up to date: {err}")

    def _drop_landed(self, remote: Remote) -> None:
        """Unpushed work whose unconfirmed push did land is unpushed no more. Each item is checked
        by its own commit, never by HEAD: a sibling worker on this clone moves HEAD to the tip."""
        tip = remote.tip() if any(work.commit for work in self.unpushed) else None
        if tip is None:
            return
        landed: dict[str, bool] = {}
        for work in self.unpushed:
            if work.commit and work.commit not in landed:
                landed[work.commit] = remote.is_ancestor(work.commit, tip)
        self.unpushed = [work for work in self.unpushed
                         if not (work.commit and landed[work.commit])]

    def _keep(self, replay: Replay[T] | None, result: T, commit: str | None = None) -> None:
        """Keep the change as unpushed work: replayed on the tip until a push of it lands."""
        again = replay(result) if replay is not None else None
        if again is not None:
            self.unpushed.append(Unpushed(again, "aq: replay of work done while the remote was away",
                                          commit))

    def _confirm(self, remote: Remote) -> bool | None:
        """After a transport failure: did our HEAD land? Asks a few times while the remote is away."""
        head = remote.head() or ""
        for attempt in range(CONFIRM_TRIES):
            landed = remote.landed(head)
            if landed is not None:
                return landed
            self.lost_sight()
            _backoff(attempt)
        self.remote_answered = False  # the clone holds commits the remote may not have
        return None

    def _note_kept(self, branch: str | None) -> None:
        if branch and branch not in " ".join(self.notices):
            self.notices.append(
                f"commits in this clone that the remote lacks and aq did not make (a person's, or "
                f"an agent's that committed in the queue's clone) are kept on branch {branch}; "
                "the queue's branch moved on without them: push or merge them from there")


def _archive_of(layout: Layout, remote: Remote) -> ArchiveRef:
    from aq.store.archive_ref import ArchiveRef  # lazily: only a sync keeps the checkout

    return ArchiveRef(layout, remote, remote.branch)


def _note(notices: list[str], notice: str) -> None:
    """`notice` for a person, once however often it is noted."""
    if notice not in notices:
        notices.append(notice)


def _note_fetch(state_dir: Path, now: float) -> None:
    """A fetch of this process worked at `now`: noted for the clone's other processes."""
    from aq.store.sync import LeaseObserver  # lazily: see `Replica._pushed`

    with contextlib.suppress(OSError):
        write_atomic(state_dir / FETCHED, json.dumps(
            {"boot": LeaseObserver.boot_id(), "at": now, "pid": os.getpid()}))


def _sibling_fetched(state_dir: Path, now: float, within: float) -> bool:
    """Whether another process of the clone (a sibling worker) was the last to fetch, within
    `within` seconds of `now`."""
    from aq.store.sync import LeaseObserver  # lazily: see `Replica._pushed`

    try:
        said = json.loads((state_dir / FETCHED).read_text())
        at = float(said["at"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return (said.get("boot") == LeaseObserver.boot_id() and said.get("pid") != os.getpid()
            and 0 <= now - at < within)


def _clone(remote: Remote) -> Clone:
    from aq.store.clone import Clone  # lazily: see `Replica._pushed`

    return Clone(remote)


def _backoff(attempt: int) -> None:
    """Exponential backoff with full jitter, capped at about one claim window (0.25 s): long
    enough to spread the losers of a race, short enough that they are not starved by winners."""
    import random
    import time

    time.sleep(random.uniform(0, min(0.25, 0.01 * 2 ** min(attempt, 5))))


def _said(line: str) -> str:
    """git's own line about a remote it could not reach, for a message: ' (...)' or ''."""
    return f" ({line.removeprefix('fatal: ').strip()})" if line.strip() else ""
