"""The fleet, DAG and stats pages of `aq web` (GET). Each reads through the same use-cases as
`aq workers` and `aq stats`; the drawings' geometry is `aq.ui.web.charts`, their markup the
templates'."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from aq.core.lifecycle import DONE_FOR_DEPS, STAGES, Stage
from aq.ui.web import charts
from aq.ui.web.pages import problem_page, web_of
from aq.ui.web.render import render

if TYPE_CHECKING:
    from aq.store.queue import Queue
    from aq.store.snapshot import Job, Snapshot
    from aq.usecases.fleet import WorkerRow
    from aq.usecases.stats import Breakdown, Stats

DAY = 86400.0
UNFINISHED = (Stage.INBOX, Stage.BUILDING, Stage.REVIEW, Stage.TESTING)
MOST_NODES = 300  # jobs and deps the DAG draws; past this the page says how many it left out
LONGEST_WINDOW = 3650 * DAY  # a `since` past ten years is a typo


# --- fleet -------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class FleetRow:
    """A worker as the fleet page shows it: its heartbeat (when the remote has one) and what it
    did in the last 24 hours (from the event logs)."""

    worker: str
    on_remote: bool = False  # its heartbeat is on the remote
    host: str | None = None
    heartbeat_age: float | None = None  # None: first seen just now, or no heartbeat
    age_from: str = "this machine"
    capabilities: tuple[str, ...] = ()
    jobs: tuple[str, ...] = ()
    retiring: bool = False
    claims: int = 0
    failures: int = 0
    busy_share: float = 0.0


def fleet(request: Request) -> Response:
    """Workers seen, the halt and its switch, and what the queue's budget has left today."""
    web = web_of(request)
    with web.queue() as queue:
        now = web.clock()
        values = web.page(queue, now=now, **_fleet_values(queue, now, web.monotonic()))
    return HTMLResponse(render("fleet.html", values))


def _fleet_values(queue: Queue, now: datetime, monotonic: float) -> dict[str, Any]:
    from aq.errors import NotApplicable, RemoteUnreachable
    from aq.usecases.fleet import list_workers
    from aq.usecases.stats import compute_stats

    seen: tuple[WorkerRow, ...] = ()
    remark = None
    try:
        seen = list_workers(queue, monotonic=monotonic, now=now)
    except (NotApplicable, RemoteUnreachable) as err:
        remark = str(err)
    today = compute_stats(queue, now=now, since=DAY)
    jobs = queue.snapshot().jobs
    failures = _failures(jobs, now - timedelta(seconds=DAY))
    return {"workers": _fleet_rows(seen, today, failures), "remark": remark,
            "budget": _budget(queue, jobs, now)}


def _fleet_rows(seen: tuple[WorkerRow, ...], today: Stats, failures: dict[str, int]
                ) -> list[FleetRow]:
    """A row per worker with a heartbeat on the remote or a claim in the last day."""
    busy = {row.worker: row for row in today.workers}
    rows = []
    for beat in seen:
        did = busy.pop(beat.worker, None)
        rows.append(FleetRow(beat.worker, True, beat.host, beat.silent_for, beat.age_from,
                             beat.capabilities, beat.jobs, beat.retiring,
                             did.attempts if did else 0, failures.get(beat.worker, 0),
                             did.busy_share if did else 0.0))
    rows += [FleetRow(did.worker, claims=did.attempts, failures=failures.get(did.worker, 0),
                      busy_share=did.busy_share) for did in busy.values()]
    return rows


def _failures(jobs: tuple[Job, ...], since: datetime) -> dict[str, int]:
    """Per worker: its attempts that ended in a failure of the job's (not a lost lease or an
    interruption) since `since`."""
    from aq.core.events import parse_iso
    from aq.usecases.stats import NOT_THE_JOBS_FAULT

    counts: dict[str, int] = {}
    for job in jobs:
        for attempt in job.state.attempts:
            if not attempt.finished or attempt.outcome in (None, *NOT_THE_JOBS_FAULT):
                continue
            try:
                ended = parse_iso(attempt.finished)
            except (ValueError, TypeError):
                continue
            if ended >= since:
                counts[attempt.worker] = counts.get(attempt.worker, 0) + 1
    return counts


@dataclass(frozen=True, slots=True)
class Budget:
    day: str  # the UTC day it counts
    usd: float  # what the attempts that finished on it cost
    tokens: int
    usd_per_day: float | None  # aq.yaml `budget:`; None: no limit
    tokens_per_day: int | None
    problem: str | None = None  # aq.yaml could not be read


def _budget(queue: Queue, jobs: tuple[Job, ...], now: datetime) -> Budget:
    from aq.core.events import iso
    from aq.errors import AqError
    from aq.usecases.spend import day_spend

    day = iso(now)[:10]
    usd, tokens = day_spend((job.state for job in jobs), day)
    try:
        config = queue.config
    except AqError as err:
        return Budget(day, usd, tokens, None, None, str(err))
    return Budget(day, usd, tokens, config.budget_usd_per_day, config.budget_tokens_per_day)


# --- DAG -------------------------------------------------------------------------------------

def dag(request: Request) -> Response:
    """Unfinished jobs and the deps they wait on, as a layered graph."""
    web = web_of(request)
    with web.queue() as queue:
        graph, drawn, left_out = _graph(queue.snapshot())
        values = web.page(queue, graph=graph, drawn=drawn, left_out=left_out,
                          stages=[str(stage) for stage in STAGES], most=MOST_NODES,
                          node_w=charts.NODE_W, node_h=charts.NODE_H)
    return HTMLResponse(render("dag.html", values))


def _graph(snapshot: Snapshot, most: int = MOST_NODES) -> tuple[charts.Graph, int, int]:
    """The graph, the unfinished jobs in it and those left out (past `most` nodes, the least
    urgent first: by stage, then priority)."""
    jobs = snapshot.by_id()
    order = {stage: index for index, stage in enumerate(STAGES)}

    def rank(job: Job) -> tuple[int, ...]:
        return (order[job.stage], job.manifest.priority_rank if job.manifest else 9)

    unfinished = sorted((job for job in snapshot.jobs if job.stage in UNFINISHED),
                        key=lambda job: (*rank(job), job.id))
    nodes: dict[str, tuple[str | None, str]] = {}
    links: list[tuple[str, str, bool]] = []
    drawn = left_out = 0
    for job in unfinished:
        deps = job.manifest.deps if job.manifest else ()
        new = {job.id, *deps} - nodes.keys()
        if len(nodes) + len(new) > most:
            left_out += 1
            continue
        drawn += 1
        nodes[job.id] = _node(job)
        for dep in deps:
            found = jobs.get(dep)
            nodes.setdefault(dep, _node(found) if found else (None, "not in the queue"))
            links.append((dep, job.id, found is None or found.stage not in DONE_FOR_DEPS))
    linked = {name for dep, job, _ in links for name in (dep, job)}
    ranks = {name: (name not in linked, *rank(jobs[name])) for name in nodes if name in jobs}
    return charts.layered(nodes, links, ranks), drawn, left_out


def _node(job: Job) -> tuple[str | None, str]:
    return str(job.stage), job.manifest.title if job.manifest else "(invalid manifest)"


# --- stats -----------------------------------------------------------------------------------

def stats(request: Request) -> Response:
    """`aq stats` as a page: `?since=7d` (any duration aq reads) or all the queue's history."""
    from aq.core.durations import DURATION_EXAMPLES, parse_duration
    from aq.usecases.stats import compute_stats

    web = web_of(request)
    since = request.query_params.get("since", "").strip()
    window = None
    if since and since != "all":
        try:
            window = parse_duration(since)
        except ValueError:
            return problem_page(web, 400, f"since {since!r} is not {DURATION_EXAMPLES} (or 'all')")
        if window > LONGEST_WINDOW:
            return problem_page(web, 400, f"since {since!r} is longer than ten years: give less")
    with web.queue() as queue:
        figures = compute_stats(queue, now=web.clock(), since=window)
        values = web.page(queue, stats=figures, since=since if window is not None else "",
                          seconds=_seconds, percent=_percent, money=_money,
                          **_stats_charts(figures))
    return HTMLResponse(render("stats.html", values))


def _stats_charts(figures: Stats) -> dict[str, Any]:
    days, per = charts.per_bucket(figures.shipped_per_day)
    shipped = charts.columns([(day[5:], count) for day, count in days],
                             [str(count) if count else "" for _, count in days], every=0)
    spent, _ = charts.per_bucket(figures.cost_per_day)
    cost_days = None if not any(usd for _, usd in spent) else charts.columns(
        [(day[5:], usd) for day, usd in spent], [_money(usd) if usd else "" for _, usd in spent],
        every=0)
    return {"shipped": shipped, "days_per_bar": per, "cost_days": cost_days,
            "shipped_total": sum(count for _, count in figures.shipped_per_day),
            "cost_by_engine": _cost_chart(figures.per_engine),
            "cost_by_profile": _cost_chart(figures.per_profile)}


def _cost_chart(rows: tuple[Breakdown, ...]) -> charts.Chart | None:
    """Cost per engine or profile; None when no attempt reported one."""
    if all(row.cost_usd is None for row in rows):
        return None
    dearest = sorted(rows, key=lambda row: -(row.cost_usd or 0.0))[:20]
    return charts.rows([(row.name, row.cost_usd or 0.0) for row in dearest],
                       [_money(row.cost_usd) for row in dearest])


def _seconds(value: float | None) -> str:
    """`-`, `40ms`, `2.5s`, `12m`, `3h05m`, as `aq stats` prints them."""
    from aq.core.durations import format_duration

    if value is None:
        return "-"
    return f"{value * 1000:.0f}ms" if value < 1 else format_duration(value)


def _percent(rate: float | None) -> str:
    if rate is None:
        return "-"
    return "<1%" if 0 < rate < 0.005 else f"{rate * 100:.0f}%"


def _money(amount: float | None) -> str:
    if amount is None:
        return "-"
    return f"${amount:,.2f}" if amount >= 1 else f"${amount:.4f}"
