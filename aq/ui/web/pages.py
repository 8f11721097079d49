"""The pages of `aq web` (GET): board, a stage's jobs, a job, its logs, and the live feeds.
Each reads through `aq.usecases` (or the board's `board_data`) and renders a template."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response, StreamingResponse

from aq.core.lifecycle import STAGES, Stage
from aq.errors import AqError
from aq.ui.board import board_data
from aq.ui.web.context import PAGE, PER_STAGE, Web
from aq.ui.web.render import render

KEEPALIVE = 15.0  # seconds between comments on an idle event stream, so proxies keep it open


def web_of(request: Request) -> Web:
    web: Web = request.app.state.web
    return web


def board(request: Request) -> Response:
    """The seven stages as columns; `?part=1`: the columns alone, for a live page to swap in."""
    web = web_of(request)
    with web.queue() as queue:
        data = board_data(queue, now=web.clock(), monotonic=web.monotonic(), shown=PER_STAGE,
                          shipped_shown=PER_STAGE, capabilities=web.capabilities(queue))
        values = web.page(queue, board=data, now=web.clock(), per_stage=PER_STAGE)
    template = "board_part.html" if request.query_params.get("part") else "board.html"
    return HTMLResponse(render(template, values))


def stage(request: Request) -> Response:
    """Every job of one stage, a page at a time, narrowed by `?q=` (id, title or profile)."""
    web = web_of(request)
    name = request.path_params["stage"]
    if name not in {str(s) for s in STAGES}:
        return problem_page(web, 404, f"no stage {name!r}: the stages are "
                        + ", ".join(str(s) for s in STAGES))
    text = request.query_params.get("q", "").strip().lower()
    number = _int(request.query_params.get("page"), 1)
    from aq.usecases.listing import list_jobs

    with web.queue() as queue:
        listing = list_jobs(queue, now=web.clock(), capabilities=web.capabilities(queue),
                            stages=(Stage(name),))
        jobs = [job for job in listing.jobs if not text or text in _haystack(job)]
        pages = max(1, -(-len(jobs) // PAGE))
        number = min(max(1, number), pages)
        shown = jobs[(number - 1) * PAGE:number * PAGE]
        values = web.page(queue, stage=name, jobs=shown, total=len(jobs), page=number,
                          pages=pages, q=text, verdicts=listing.verdicts)
    return HTMLResponse(render("stage.html", values))


def job(request: Request) -> Response:
    web = web_of(request)
    from aq.usecases.jobs import show_job

    with web.queue() as queue:
        try:
            detail = show_job(queue, request.path_params["job"], now=web.clock(),
                              capabilities=web.capabilities(queue))
        except AqError as err:
            return problem_page(web, 404, str(err))
        from aq.usecases.spend import cost_so_far

        cost = cost_so_far(detail.job.state, detail.job.stage is Stage.BUILDING,
                           queue.running_dir() / detail.job.id)
        values = web.page(queue, detail=detail, job=detail.job, cost=cost, now=web.clock(),
                          events=list(reversed(detail.events)))
    return HTMLResponse(render("job.html", values))


def log(request: Request) -> Response:
    """An attempt's log as text (`?attempt=N`, else the latest), as `aq logs` prints it."""
    web = web_of(request)
    from aq.usecases.logs import find_log, read_log

    with web.queue() as queue:
        try:
            ref = find_log(queue, request.path_params["job"], _attempt(request))
            text = b"".join(read_log(queue, ref, follow=False))
        except AqError as err:
            return PlainTextResponse(f"aq: {err}\n", status_code=404)
    return PlainTextResponse(text.decode("utf-8", "replace"))


def artifact(request: Request) -> Response:
    """One kept artifact of the job (`?path=` as its attempt lists it), as plain text: never
    rendered as a page of this site, whatever it holds."""
    web = web_of(request)
    wanted = request.query_params.get("path", "")
    from aq.infra.confine import read_file

    with web.queue() as queue:
        try:
            job = queue.resolve(request.path_params["job"])
            kept = {name for attempt in job.state.attempts for name in attempt.artifacts}
            # where aq keeps them, whatever an event (anyone with push access writes those) says
            if wanted not in kept or not wanted.startswith(f"queue/.logs/{job.id}/"):
                return PlainTextResponse(f"aq: {job.id} kept no artifact {wanted!r}\n",
                                         status_code=404)
            data = read_file(queue.root, queue.root / wanted)
        except (AqError, OSError) as err:
            return PlainTextResponse(f"aq: {err}\n", status_code=404)
    return PlainTextResponse(data.decode("utf-8", "replace"),
                             headers={"x-content-type-options": "nosniff"})


def diff(request: Request) -> Response:
    """The patch a job's branch makes against its base, as `aq diff` prints it."""
    web = web_of(request)
    from aq.usecases.ship import job_diff

    with web.queue() as queue:
        try:
            found = job_diff(queue, request.path_params["job"])
        except AqError as err:
            return PlainTextResponse(f"aq: {err}\n", status_code=404)
    return PlainTextResponse(f"# {found.branch} against {found.base}\n{found.patch}")


async def log_stream(request: Request) -> Response:
    """A running attempt's log as Server-Sent Events: all there is, then what is appended,
    until the attempt ends (event `end`)."""
    web = web_of(request)
    from aq.usecases.logs import find_log

    try:
        with web.queue() as queue:
            ref = find_log(queue, request.path_params["job"], _attempt(request))
    except AqError as err:
        return PlainTextResponse(f"aq: {err}\n", status_code=404)
    return _events(_log_events(request, web, ref))


async def _log_events(request: Request, web: Web, ref: object) -> AsyncIterator[str]:
    from aq.usecases.logs import LogRef, read_log

    assert isinstance(ref, LogRef)
    queue = web.reader()
    looks: Iterator[bytes] = read_log(queue, ref, follow=True, sleep=lambda _s: None)
    pending = b""
    while not await request.is_disconnected():
        chunk = await asyncio.to_thread(next, looks, None)
        if chunk is None:
            break
        pending += chunk
        if b"\n" in pending:
            text, _, pending = pending.rpartition(b"\n")
            yield _event("log", json.dumps(text.decode("utf-8", "replace") + "\n"))
        if chunk == b"":
            await asyncio.sleep(0.3)
    if pending:
        yield _event("log", json.dumps(pending.decode("utf-8", "replace")))
    yield _event("end", "{}")


async def live(request: Request) -> Response:
    """The queue's change count as Server-Sent Events: an open page reloads what it shows
    when it moves."""
    web = web_of(request)

    async def changes() -> AsyncIterator[str]:
        seen, idle = web.watcher.version, 0.0
        yield _event("version", str(seen))
        while not await request.is_disconnected():
            now = await asyncio.to_thread(web.watcher.wait_change, seen, 1.0)
            idle += 1.0
            if now != seen:
                seen, idle = now, 0.0
                yield _event("version", str(seen))
            elif idle >= KEEPALIVE:
                idle = 0.0
                yield ": still here\n\n"
    return _events(changes())


def _events(stream: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(stream, media_type="text/event-stream",
                             headers={"cache-control": "no-store", "x-accel-buffering": "no"})


def _event(name: str, data: str) -> str:
    return f"event: {name}\ndata: {data}\n\n"


def problem_page(web: Web, status: int, message: str) -> Response:
    with web.queue() as queue:
        values = web.page(queue, message=message, heading={400: "bad request", 404: "not found"}.get(
            status, f"refused ({status})"))
    return HTMLResponse(render("problem.html", values), status_code=status)


def _haystack(job: object) -> str:
    manifest = getattr(job, "manifest", None)
    parts = [getattr(job, "id", "")]
    if manifest is not None:
        parts += [manifest.title, manifest.profile or "", manifest.engine or ""]
    return " ".join(parts).lower()


def _attempt(request: Request) -> int | None:
    value = _int(request.query_params.get("attempt"), 0)
    return value or None


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text else default
    except ValueError:
        return default
