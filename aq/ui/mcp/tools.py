"""The tools `aq mcp` serves. Each is one call into the same use-case as the CLI's command,
judged on a fresh view of the remote, and answers compact JSON: the CLI's `--json` shapes
(aq.ui.cli.shapes) where it has one, so a script and an agent read the same fields.

An agent pays context for every word of a tool's description and schema, so each says what
it does in a sentence or two and takes few, typed parameters."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field

from aq.core.lifecycle import Action, Stage
from aq.errors import MoveRefused, UsageError
from aq.store.queue import Queue
from aq.ui.cli.session import caps, fetched
from aq.ui.cli.shapes import detail_json, move_json, next_json

LISTED = 200  # jobs a listing answers with; it says how many more there are
LOG_CHARS = 20_000  # the end of a log an answer holds
EVENTS_SHOWN = 10  # a job's latest events shown_job answers with
FRESH = 10.0  # seconds a read trusts this clone's last fetch of the remote

StageName = Literal["inbox", "building", "review", "testing", "shipped", "failed", "dead_letter"]
MoveName = Literal["promote", "ship", "reject", "requeue", "cancel"]
Priority = Literal["critical", "high", "medium", "low"]
JobRef = Annotated[str, Field(description="Job id or a unique prefix of one.")]


def compact(data: Any) -> str:
    """JSON without the spaces an agent would pay for."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str)


def pruned(job: dict[str, Any]) -> dict[str, Any]:
    """A job's JSON shape without the fields that say nothing (null or empty): an absent field
    reads as null. Its resolved settings keep those with a value, as `aq show` prints them."""
    data = _said(job)
    if isinstance(data.get("attempt_log"), list):
        data["attempt_log"] = [_said(attempt) for attempt in data["attempt_log"]]
    if isinstance(data.get("resolved"), dict):
        data["resolved"] = {name: item for name, item in data["resolved"].items()
                            if item.get("value") not in (None, False, [])}
    return data


def _said(data: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in data.items() if value is not None and value != []}


class QueueTools:
    """The queue as an MCP server's tools see it: one queue, one clock, one name to record."""

    def __init__(self, queue: Queue, *, who: str, clock: Callable[[], datetime],
                 env: Mapping[str, str], monotonic: Callable[[], float] = time.monotonic) -> None:
        self.queue = queue
        self.who = who  # "user@host via mcp"
        self.clock = clock
        self.env = env
        self.monotonic = monotonic
        self._fetched_at: float | None = None

    def tools(self) -> list[Callable[..., str]]:
        """Every tool, in the order a client lists them."""
        return [self.add_job, self.spawn_child, self.list_jobs, self.show_job, self.job_log,
                self.move_job, self.next_job]

    def _fresh(self, *, now: bool = False) -> Queue:
        """The queue, fetched from its remote first: always before a move, at most every
        FRESH seconds before a read (a server lives long; its clone must not go stale)."""
        q = self.queue
        if q.remote is not None and (now or self._fetched_at is None
                                     or self.monotonic() - self._fetched_at > FRESH):
            fetched(q)
            self._fetched_at = self.monotonic()
        return q

    def _answer(self, data: dict[str, Any]) -> str:
        notices = self.queue.take_notices()
        return compact({**data, "notices": notices} if notices else data)

    def add_job(
        self,
        body: Annotated[str, Field(description="What to do, in Markdown. May open with --- "
                                   "YAML frontmatter for other manifest keys.")],
        title: str | None = None,
        priority: Priority | None = None,
        profile: str | None = None,
        deps: Annotated[list[str] | None, Field(description="Ids of jobs that must pass "
                                                "first.")] = None,
        verify: Annotated[str | None, Field(description="Shell command; exit 0 = the work "
                                            "passed.")] = None,
    ) -> str:
        """Add a job to the queue's inbox. Returns its id and stage."""
        from aq.core.manifest import split_frontmatter
        from aq.usecases.jobs import add_job, check_names, deps_exist

        q = self.queue
        source = "the job body"
        front, text = split_frontmatter(body, source)
        given = {"title": title, "priority": priority, "profile": profile, "deps": deps,
                 "verify": verify}
        fields = {**front, **{key: value for key, value in given.items() if value is not None}}
        check_names(q, fields, source)
        added = add_job(q, text, fields, job_id=None, now=self.clock(), who=self.who,
                        entropy=secrets.randbits(30), source=source,
                        guard=deps_exist(q, fields, source))
        data = {"id": added.job.id, "stage": str(added.job.stage), "created": added.created}
        return self._answer(data if added.created else {**data, "message": added.message})

    def spawn_child(
        self,
        body: Annotated[str, Field(description="What the child does, in Markdown.")],
        title: str | None = None,
        priority: Priority | None = None,
        verify: str | None = None,
        parent: Annotated[str | None, Field(description="Default: the job this runs in "
                                            "(AQ_JOB_ID).")] = None,
    ) -> str:
        """Add a child of the running job: it waits for its children, then its verify runs.
        The same child spawned twice is made once."""
        from aq.core.manifest import split_frontmatter
        from aq.usecases.children import spawn_child

        inside = self.env.get("AQ_JOB_ID")
        parent = parent or inside
        if not parent:
            raise UsageError("spawn_child needs its parent: call it from inside a job's attempt "
                             "(AQ_JOB_ID), or name parent")
        q = self._fresh(now=True)
        parent = q.resolve(parent).id
        if inside and parent != inside and not _below(q, parent, inside):
            raise MoveRefused(f"an agent inside job {inside}'s attempt may add children only to "
                              f"its own job and its children; {parent} is not one")
        front, text = split_frontmatter(body, "the child")
        given = {"title": title, "priority": priority, "verify": verify}
        fields = {**front, **{key: value for key, value in given.items() if value is not None}}
        added = spawn_child(q, parent, text, fields, now=self.clock(),
                            who=self.env.get("AQ_WORKER_ID") or self.who,
                            entropy=secrets.randbits(30), source="the child")
        return self._answer({"id": added.job.id, "parent": parent, "created": added.created})

    def list_jobs(self, stage: StageName | None = None,
                  ready: Annotated[bool, Field(description="Only inbox jobs a worker here could "
                                               "take now, in the order it would.")] = False,
                  ) -> str:
        """List jobs (oldest first per stage) with id, stage, title, priority and, for an
        inbox job, whether it is ready or why it waits."""
        from aq.usecases.listing import list_jobs

        q = self._fresh()
        listing = list_jobs(q, now=self.clock(), capabilities=caps(q),
                            stages=[Stage(stage)] if stage else [], ready=ready)
        rows = []
        for job in listing.jobs[:LISTED]:
            row: dict[str, Any] = {"id": job.id, "stage": str(job.stage),
                                   "title": job.manifest.title if job.manifest else None,
                                   "priority": job.manifest.priority if job.manifest else None}
            verdict = listing.verdicts.get(job.id)
            if verdict is not None:
                row["ready"] = verdict.ready
                if not verdict.ready:
                    row["waits"] = verdict.reason
            if job.error:
                row["error"] = job.error
            rows.append(row)
        data: dict[str, Any] = {"jobs": rows}
        if len(listing.jobs) > LISTED:
            data["left_out"] = len(listing.jobs) - LISTED
        if listing.problems:
            data["problems"] = list(listing.problems)
        return self._answer(data)

    def show_job(self, job: JobRef) -> str:
        """One job: stage, manifest and resolved settings, attempts with outcome and usage,
        moves allowed now, and its latest events."""
        from aq.usecases.jobs import show_job

        q = self._fresh()
        data = pruned(detail_json(show_job(q, job, now=self.clock(), capabilities=caps(q))))
        events = data.pop("events", [])
        if events:
            data["events"] = events[-EVENTS_SHOWN:]
        if len(events) > EVENTS_SHOWN:
            data["events_left_out"] = len(events) - EVENTS_SHOWN
        return self._answer(data)

    def job_log(self, job: JobRef,
                attempt: Annotated[int | None, Field(ge=1, description="Attempt number "
                                                     "(default: the latest).")] = None) -> str:
        """The log of a job's attempt as plain text: its last 20,000 characters."""
        from aq.usecases.logs import find_log, read_log

        q = self._fresh()
        ref = find_log(q, job, attempt)
        tail, total = bytearray(), 0
        for chunk in read_log(q, ref, follow=False):
            total += len(chunk)
            tail += chunk
            del tail[:-4 * LOG_CHARS]  # enough bytes for LOG_CHARS characters of UTF-8
        text = tail.decode("utf-8", "replace")[-LOG_CHARS:]
        kept = len(text.encode("utf-8", "replace"))
        state = "running: the log so far" if ref.running else "ended"
        head = f"[{ref.job_id} attempt {ref.attempt}, {state}"
        head += f"; its first {total - kept} bytes left out]" if total > kept else "]"
        return f"{head}\n{text}"

    def move_job(self, job: JobRef, action: MoveName,
                 reason: Annotated[str | None, Field(description="Why; a reject needs one.")
                                   ] = None) -> str:
        """Move a job: promote (review->testing), ship (review/testing->shipped), reject
        (review/testing->failed), requeue (failed/dead_letter->inbox) or cancel
        (unfinished->failed)."""
        from aq.usecases.moves import move_job

        why = reason.strip() if reason and reason.strip() else None
        if action == "reject" and why is None:
            raise UsageError("a reject needs a reason: say why")
        if action == "cancel":
            why = f"canceled: {why}" if why else "canceled"
        q = self._fresh(now=True)
        self._gate(q, job, action)
        moved = move_job(q, job, Action(action), who=self.who, now=self.clock(), env=self.env,
                         reason=why)
        return self._answer(move_json(moved))

    def _gate(self, queue: Queue, ref: str, action: str) -> None:
        """An agent inside a job's attempt (AQ_JOB_ID) holds no person's gate: it may cancel or
        reject only jobs of its own family below it (its children, theirs...), and never
        promote, ship or requeue (`mcp: true` gives it these tools without yolo)."""
        inside = self.env.get("AQ_JOB_ID")
        if not inside:
            return
        if action not in ("cancel", "reject"):
            raise MoveRefused(f"an agent inside job {inside}'s attempt may not {action} a job: "
                              f"that is a person's call (aq {action} from outside the job)")
        target = queue.resolve(ref)
        if not _below(queue, target.id, inside):
            raise MoveRefused(f"an agent inside job {inside}'s attempt may {action} only its own "
                              f"children and theirs; {target.id} is not one")

    def next_job(self) -> str:
        """What `aq run` here would take next, and why each other inbox job is passed over."""
        from aq.usecases.listing import next_job

        q = self._fresh()
        data = next_json(next_job(q, now=self.clock(), capabilities=caps(q)))
        if data["next"] is not None:
            data["next"] = pruned(data["next"])
        passed = data["passed_over"]
        data["passed_over"] = passed[:LISTED]
        data["candidates"] = data["candidates"][:LISTED]
        if len(passed) > LISTED:
            data["left_out"] = len(passed) - LISTED
        return self._answer(data)


def _below(queue: Queue, job_id: str, ancestor: str) -> bool:
    """Whether `job_id` is a child of `ancestor`, or a child's, and so on."""
    parents = {job.id: job.manifest.parent for job in queue.snapshot().jobs if job.manifest}
    above, seen = parents.get(job_id), set()
    while above is not None and above != ancestor and above not in seen:
        seen.add(above)
        above = parents.get(above)
    return above == ancestor
