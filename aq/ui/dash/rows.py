"""What the job list shows: the filters, a row per job, the words for a job's status and the
lines above the list. Plain data and text, no widgets: tests read it directly."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from aq.core.lifecycle import STAGES, Stage
from aq.ui.dash.times import ago, elapsed, retry_wait

if TYPE_CHECKING:
    from aq.core.scheduler import Verdict
    from aq.store.snapshot import Job
    from aq.ui.dash.session import Live
    from aq.usecases.listing import Listing
    from aq.usecases.moves import MoveResult


STAGE_CYCLE: tuple[Stage | None, ...] = (None, *STAGES)  # None: every stage


@dataclass(frozen=True, slots=True)
class Filters:
    stage: Stage | None = None
    profile: str | None = None
    text: str = ""

    def admits(self, job: Job) -> bool:
        manifest = job.manifest
        if self.stage is not None and job.stage is not self.stage:
            return False
        if self.profile is not None and (manifest is None or manifest.profile != self.profile):
            return False
        needle = self.text.strip().lower()
        title = manifest.title if manifest else ""
        return not needle or needle in job.id.lower() or needle in title.lower()

    def describe(self) -> str:
        return f"profile: {self.profile or 'all'}   text: {self.text or '-'}"

    def with_stage(self, stage: Stage | None) -> Filters:
        return Filters(stage, self.profile, self.text)

    def with_profile(self, profile: str | None) -> Filters:
        return Filters(self.stage, profile, self.text)

    def with_text(self, text: str) -> Filters:
        return Filters(self.stage, self.profile, text)

    def next_stage(self, step: int) -> Filters:
        """The stage after (step 1) or before (-1) this one, round through all stages."""
        index = STAGE_CYCLE.index(self.stage)
        return self.with_stage(STAGE_CYCLE[(index + step) % len(STAGE_CYCLE)])

    def only_stage(self, number: int) -> Filters:
        """Key `number`'s stage (1-7; 0: all); the stage already shown again: all."""
        stage = STAGE_CYCLE[number]
        return self.with_stage(None if stage is self.stage else stage)

    def next_profile(self, profiles: list[str]) -> Filters:
        cycle: list[str | None] = [None, *profiles]
        index = cycle.index(self.profile) if self.profile in cycle else 0
        return self.with_profile(cycle[(index + 1) % len(cycle)])


@dataclass(frozen=True, slots=True)
class Row:
    number: int  # place in the whole listing: filtering never renumbers, so "job 3" stays job 3
    job_id: str
    stage: Stage
    priority: str
    profile: str
    title: str
    status: str  # never cut: the layout makes room for it
    when: str = ""  # "3m ago", "in 4m", or a running attempt's elapsed time
    tail: str = ""  # a running attempt's last log line: cut first when room is short


def status_of(job: Job, verdict: Verdict | None, live: Live | None = None) -> str:
    """Why an inbox job waits, who holds a building one, else how the job got where it is."""
    state = job.state
    if job.error:
        return f"invalid: {job.error}"
    if verdict is not None:
        if verdict.ready:
            return "ready"
        return f"waits: {retry_wait(verdict.reason or '') or verdict.reason}"
    if job.stage is Stage.BUILDING and state.holder:
        cost = f", ${live.cost:.2f} so far" if live is not None and live.cost else ""
        return f"{state.holder}, attempt {state.attempt_count}{cost}"
    if state.last_reason and state.last_outcome and state.last_outcome not in state.last_reason:
        return f"{state.last_reason} (last attempt: {state.last_outcome})"
    return state.last_reason or state.last_outcome or ""


def when_of(job: Job, now: datetime | None) -> str:
    """A building job's time running; an inbox job's wait for its retry ("in 4m"); else how
    long ago it got where it is."""
    if now is None:
        return ""
    state = job.state
    if job.stage is Stage.BUILDING and state.attempts:
        return elapsed(state.attempts[-1].started, now)
    if job.stage is Stage.INBOX and state.not_before and ago(state.not_before, now).startswith("in "):
        return ago(state.not_before, now)
    return ago(state.moved_at or state.added_at, now) or _ago_time(job.added, now)


def _ago_time(then: datetime, now: datetime) -> str:
    return ago(then.isoformat(), now)


def moved_note(result: MoveResult) -> str:
    """What the dash says of a move: where the job went, and a post its tracker did not get."""
    unsent = [item.message for item in result.tracker if not item.ok]
    owed = f"; {unsent[0]}: it stays owed" if unsent else ""
    return f"{result.action} {result.job_id}: {result.source} -> {result.target}{owed}"


def rows_of(listing: Listing, filters: Filters = Filters(), *, now: datetime | None = None,
            live: Mapping[str, Live] | None = None) -> list[Row]:
    rows = []
    live = live or {}
    for number, job in enumerate(listing.jobs, 1):
        if filters.admits(job):
            manifest = job.manifest
            seen = live.get(job.id)
            rows.append(Row(number, job.id, job.stage, manifest.priority if manifest else "-",
                            (manifest.profile or "") if manifest else "",
                            manifest.title if manifest else "(invalid)",
                            status_of(job, listing.verdicts.get(job.id), seen),
                            when_of(job, now), seen.last_line if seen else ""))
    return rows


def profiles_in_use(listing: Listing) -> list[str]:
    return sorted({job.manifest.profile for job in listing.jobs
                   if job.manifest is not None and job.manifest.profile})


def stage_counts(listing: Listing | None) -> Counter[Stage]:
    return Counter(job.stage for job in listing.jobs) if listing is not None else Counter()


def cut(text: str, width: int) -> str:
    """`text` on one line in `width` characters, an ellipsis marking a cut."""
    text = " ".join(text.split())
    if width <= 0:
        return ""
    return text if len(text) <= width else text[: width - 1] + "…"


def summary_line(shown: int, total: int, filters: Filters, *, marked: int = 0,
                 halted: str | None, reachable: bool | None, root: Path) -> str:
    """The line under the stage tabs: a halt first (it must never be cut off), how many jobs
    show, the other filters, the marks, an unreachable remote, the queue's folder."""
    parts = [f"{shown} of {total} jobs", filters.describe()]
    if marked:
        parts.append(f"{marked} marked")
    if halted is not None:
        parts.insert(0, f"HALTED: {halted}")
    if reachable is False:
        parts.append("remote unreachable: showing this clone")
    parts.append(str(root))
    return "   ".join(parts)


def stage_number(stage: Stage) -> int:
    """The key (1-7) that shows only `stage`."""
    return STAGES.index(stage) + 1
