"""What the job list shows: the filters, a row per job, the words for a job's status and the
summary line above the list. Plain text, no widgets: tests read it directly."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aq.core.lifecycle import Stage

if TYPE_CHECKING:
    from aq.core.scheduler import Verdict
    from aq.store.snapshot import Job
    from aq.usecases.listing import Listing
    from aq.usecases.moves import MoveResult


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
        return (f"stage: {self.stage or 'all'}   profile: {self.profile or 'all'}   "
                f"text: {self.text or '-'}")


@dataclass(frozen=True, slots=True)
class Row:
    number: int  # place in the whole listing: filtering never renumbers, so "job 3" stays job 3
    job_id: str
    stage: Stage
    priority: str
    profile: str
    title: str
    status: str


def _cost_so_far(job: Job, running: Path | None) -> str:
    """`, $0.42 so far` for a building job whose cost is known."""
    from aq.usecases.spend import cost_so_far

    spent = cost_so_far(job.state, running is not None, (running or Path()) / job.id)
    return f", ${spent:.2f} so far" if spent else ""


def status_of(job: Job, verdict: Verdict | None, running: Path | None = None) -> str:
    """Why an inbox job waits, who holds a building one, else how the job got where it is."""
    state = job.state
    if job.error:
        return f"invalid: {job.error}"
    if verdict is not None:
        return "ready" if verdict.ready else f"waits: {verdict.reason}"
    if job.stage is Stage.BUILDING and state.holder:
        return f"{state.holder}, attempt {state.attempt_count}{_cost_so_far(job, running)}"
    if state.last_reason and state.last_outcome and state.last_outcome not in state.last_reason:
        return f"{state.last_reason} (last attempt: {state.last_outcome})"
    return state.last_reason or state.last_outcome or ""


def moved_note(result: MoveResult) -> str:
    """What the dash says of a move: where the job went, and a post its tracker did not get."""
    unsent = [item.message for item in result.tracker if not item.ok]
    owed = f"; {unsent[0]}: it stays owed" if unsent else ""
    return f"{result.action} {result.job_id}: {result.source} -> {result.target}{owed}"


def rows_of(listing: Listing, filters: Filters, running: Path | None = None) -> list[Row]:
    rows = []
    for number, job in enumerate(listing.jobs, 1):
        if filters.admits(job):
            manifest = job.manifest
            rows.append(Row(number, job.id, job.stage, manifest.priority if manifest else "-",
                            (manifest.profile or "") if manifest else "",
                            manifest.title if manifest else "(invalid)",
                            status_of(job, listing.verdicts.get(job.id), running)))
    return rows


def profiles_in_use(listing: Listing) -> list[str]:
    return sorted({job.manifest.profile for job in listing.jobs
                   if job.manifest is not None and job.manifest.profile})


def cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def summary_line(shown: int, total: int, filters: Filters, *, halted: str | None,
                 reachable: bool | None, root: Path) -> str:
    """The line above the list: how many jobs show, the filters, a halt, an unreachable remote."""
    parts = [f"{shown} of {total} jobs", filters.describe()]
    if halted is not None:
        parts.insert(0, f"HALTED: {halted}")
    if reachable is False:
        parts.append("remote unreachable: showing this clone")
    parts.append(str(root))
    return "   ".join(parts)
