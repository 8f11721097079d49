"""Child jobs: jobs a running job adds that belong to it (`parent:`), and when its work waits
for them.

A parent whose engine finished while some of its children are still in the workers' hands
(inbox or building) goes back to the inbox to wait; once every child is settled (in review,
testing, shipped, failed or dead_letter: out of the workers' hands) a worker claims it again
and runs only its verify, which can read the children's results (fan-in).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from aq.core.events import Attempt
from aq.core.lifecycle import Stage
from aq.core.manifest import Manifest

UNSETTLED = frozenset({Stage.INBOX, Stage.BUILDING})  # a worker may still run it


class JobView(Protocol):
    """What a family is made of: a job's id, stage, manifest and age (the scheduler's JobView
    and the store's Job both are one)."""

    @property
    def id(self) -> str: ...
    @property
    def stage(self) -> Stage: ...
    @property
    def manifest(self) -> Manifest | None: ...
    @property
    def added(self) -> datetime: ...


@dataclass(frozen=True, slots=True)
class Family:
    """A parent's children as they stand: (id, stage) of each, oldest first; and the parent's
    attempts one of whose samples (best of N, core.samples) won."""

    children: tuple[tuple[str, Stage], ...]
    won: frozenset[int] = frozenset()
    samples: tuple[tuple[str, int], ...] = ()  # (id, the attempt that asked for it) of each sample

    @property
    def unsettled(self) -> tuple[str, ...]:
        return tuple(job_id for job_id, stage in self.children if stage in UNSETTLED)

    def waiting_reason(self, awaited: int | None = None) -> str | None:
        """Why a parent that waits for its children cannot be taken yet; None: it can, and so
        it can once a sample that its attempt `awaited` asked for has won."""
        losers = ({child for child, asked in self.samples if asked == awaited}
                  if awaited in self.won else set())  # the winner's parent stops them
        waiting = tuple(child for child in self.unsettled if child not in losers)
        if not waiting:
            return None
        settled = len(self.children) - len(waiting)
        shown = ", ".join(waiting[:3]) + (" ..." if len(waiting) > 3 else "")
        return f"waits for its children: {settled} of {len(self.children)} settled ({shown})"


def family(jobs: Iterable[JobView], parent: str) -> Family:
    """The children of `parent` among `jobs`, oldest first (then by id)."""
    return families(jobs).get(parent, Family(()))


def families(jobs: Iterable[JobView]) -> dict[str, Family]:
    """parent id -> its Family, for every job that has children: one pass over the jobs."""
    kids: dict[str, list[JobView]] = {}
    for job in jobs:
        if job.manifest is not None and job.manifest.parent:
            kids.setdefault(job.manifest.parent, []).append(job)
    return {parent: _family(parent, found) for parent, found in sorted(kids.items())}


def _family(parent: str, found: list[JobView]) -> Family:
    from aq.core.samples import WON, sample_of  # lazily: a queue of no parent needs no samples

    found = sorted(found, key=lambda job: (job.added, job.id))
    samples, won = [], set()
    for job in found:
        assert job.manifest is not None
        asked = sample_of(job.manifest.parent, job.manifest.idempotency_key, parent)
        if asked is not None:
            samples.append((job.id, asked[0]))
            if job.stage is WON:
                won.add(asked[0])
    return Family(tuple((job.id, job.stage) for job in found), frozenset(won), tuple(samples))


def awaited(attempts: tuple[Attempt, ...]) -> int | None:
    """The last attempt that ended waiting for its children (whose work a verify-only attempt
    goes on with); None if none did."""
    for earlier in reversed(attempts):
        if earlier.outcome == "awaiting_children":
            return earlier.number
    return None


def descendants(kin: Mapping[str, Family], parent: str) -> list[tuple[str, str]]:
    """(child, its parent) of each child of `parent` still in the workers' hands, and of
    theirs, each parent before its children."""
    found: list[tuple[str, str]] = []
    for child in kin.get(parent, Family(())).unsettled:
        found += [(child, parent), *descendants(kin, child)]
    return found


def child_key(parent: str, text: str) -> str:
    """The idempotency key of a child spawned with `text` (its whole manifest): a retried parent
    that spawns the same child again finds the one it made."""
    import hashlib  # only where children are spawned; a listing needs none

    digest = hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:20]
    return f"child-of:{parent}:{digest}"
