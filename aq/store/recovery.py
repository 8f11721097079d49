"""What a sync finds in this clone that no transaction of this process made, and what it does.

Half a move left by a process killed mid-transaction is put back to HEAD. aq commits the remote
lacks that a sibling worker made before it died are salvaged: replayed on the tip where they
still hold. Job files a person dropped into the inbox are adopted: committed with an `added`
event. Salvage and adoption become unpushed work, replayed after any lost race, so a reset to the
tip never loses them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from aq.core.events import Event, added, fold, iso, stale_result
from aq.core.fencing import Standing, fence
from aq.core.ids import is_job_id
from aq.core.lifecycle import STAGES, Stage
from aq.store.layout import LOGS_DIR, QUEUE_DIR, Layout
from aq.store.tx import InboxWatch, Tx, Unpushed

if TYPE_CHECKING:
    from aq.store.clone import Clone, LocalChange


class HalfMoves:
    """Half a move a process killed mid-transaction may leave in queue/: marked while one could
    be made, put back to HEAD by the next sync. The mark saves a `git status` on every sync,
    which in a clone with a year's archive costs a tenth of a second or more."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.checks = 0  # how many times this process checked queue/ against HEAD

    @contextmanager
    def changing(self) -> Iterator[bool]:
        """Mark, under the queue lock, that this process may leave queue/ half-changed until the
        block ends. Yields True when queue/ must be checked: a process died inside such a block
        (its mark is still there)."""
        marker = self.state_dir / "tree-changing"
        dead_left_it = marker.exists()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        marker.write_bytes(b"")
        checks = self.checks
        try:
            yield dead_left_it
        finally:
            # a dead process's mark goes only once queue/ was checked (a sync whose fetch
            # failed checks nothing): else the next transaction, of any process, checks it
            if not dead_left_it or self.checks > checks:
                marker.unlink(missing_ok=True)

    def put_back(self, clone: Clone) -> None:
        clone.discard_uncommitted()  # half a move a killed process left: never committed as is
        self.checks += 1


class Salvage:
    """aq commits of this clone the remote lacks that hold no unpushed work of this process,
    such as those of a sibling worker that died (or stopped) while the remote was away."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.taken: set[str] = set()  # commits already salvaged by this process

    def of_the_dead(self, clone: Clone, head: str | None, tip: str | None, mine: set[str]
                    ) -> list[Unpushed]:
        """Before an align drops them: those commits, as unpushed work, each replayed with its
        precondition checked again. `mine`: commits holding this process's own unpushed work
        (a result it also holds unpushed is recorded once)."""
        if head is None or tip is None or head == tip:
            return []
        found = clone.unpushed_aq_commits(tip, skip=mine | self.taken)
        self.taken |= {change.commit for change in found}
        return [Unpushed(functools.partial(self._replay, change),
                     f"aq: salvage of {change.commit[:12]} ({change.subject[4:60]})")
                for change in found]

    def _replay(self, change: LocalChange, tx: Tx) -> None:
        """Re-apply what a dead worker's commit did, where it still holds on the tip: a result
        for a job still in building under the same lease, or a job dropped by hand that no
        stage has. Anything else stays undone (its job moved on without it)."""
        for job_id, events in change.events.items():
            for event in events:
                kind = event.get("type")
                if kind == "finished":
                    self._finished(change, tx, job_id, event)
                elif kind == "added" and event.get("by") == "dropped-by-hand" \
                        and tx.stage_of(job_id) is None:
                    rel = f"{QUEUE_DIR}/{Stage.INBOX}/{job_id}.md"
                    if rel in change.files:
                        tx.write(self.layout.root / rel, change.files[rel])
                        tx.append_event(job_id, {**event, "salvaged": change.commit})

    def _finished(self, change: LocalChange, tx: Tx, job_id: str, event: Event) -> None:
        """A result: it moves its job where the job is still in building under the same lease;
        elsewhere it is kept as a stale result (fenced, DESIGN §5). Its logs are kept either way."""
        stage, events, by = tx.stage_of(job_id), tx.events(job_id), event.get("by")
        if stage is None:
            return  # gone
        fenced = fence(stage, fold(events), events, token=event.get("token"),
                       outcome=event.get("outcome"), worker=by)
        if fenced.standing is Standing.RECORDED:
            return
        prefix = f"{QUEUE_DIR}/{LOGS_DIR}/{job_id}/"
        for rel, data in change.files.items():
            if rel.startswith(prefix) and not (self.layout.root / rel).exists():
                tx.write(self.layout.root / rel, data)
        if fenced.standing is Standing.CURRENT:
            try:
                target = Stage(str(event.get("to")))
            except ValueError:
                return
            tx.move(job_id, Stage.BUILDING, target, {**event, "salvaged": change.commit})
        elif fenced.standing is Standing.FENCED:
            tx.append_event(job_id, stale_result(
                event.get("ts"), by, event.get("attempt"), event.get("token"),
                event.get("outcome"), event.get("log"), salvaged=change.commit,
                why=f"salvaged after its worker stopped; fenced: {fenced.where}"))


class Adoption:
    """Job files a person dropped into this clone's inbox become unpushed adds: committed with an
    `added` event and replayed after any lost race, so a reset to the tip never loses them."""

    def __init__(self, layout: Layout, inbox: InboxWatch) -> None:
        self.layout = layout
        self.inbox = inbox
        self.adopting: set[str] = set()  # job ids whose add this process holds unpushed or made

    def dropped(self, clone: Clone, now: datetime) -> list[Unpushed]:
        """The adds of files dropped since the last look; `now` is their `added` time."""
        if not self.inbox.changed():
            return []  # no file came or went since the last look
        adds = []
        for path, data in clone.untracked_inbox_jobs().items():
            if path.stem in self.adopting or not is_job_id(path.stem):
                continue
            self.adopting.add(path.stem)
            adds.append(Unpushed(functools.partial(self._adopt, path, data, now),
                             f"aq: add {path.stem} (dropped into the inbox by hand)"))
        return adds

    def _adopt(self, path: Path, data: bytes, now: datetime, tx: Tx) -> None:
        job_id = path.stem
        elsewhere = [stage for stage in STAGES if stage is not Stage.INBOX
                     and (self.layout.qdir / stage / path.name).exists()]
        if elsewhere:  # the job is already in another stage: this copy is a leftover, not a new job
            path.unlink(missing_ok=True)
            self.adopting.discard(job_id)
            return
        if path.exists():
            tx.touched.append(path)
        else:
            tx.write(path, data)
        if not tx.state(job_id).added_at:
            tx.append_event(job_id, added(iso(now), "dropped-by-hand"))
