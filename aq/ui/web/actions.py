"""The changes a person makes from `aq web` (POST, behind the guard's CSRF check): a job's
moves and the fleet's halt and resume. Each goes through the same use-case as the CLI's,
fetched first so it is judged on the fleet's state, recorded as `user@host via web`. The answer
is JSON: what happened, or aq's own one-line refusal (status 409) with nothing changed."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from aq.core.lifecycle import Action
from aq.errors import AqError
from aq.ui.web.pages import web_of

FETCH_WAIT = 30.0  # seconds a move waits for the clone's lock to fetch first, as the CLI's do
MOVES = frozenset({"promote", "ship", "reject", "requeue", "cancel"})  # a person's moves


async def move(request: Request) -> Response:
    body = await _body(request)
    if isinstance(body, str):
        return _refused(400, body)
    action = request.path_params["action"]
    if action not in MOVES:
        return _refused(404, f"no move {action!r}: the moves are {', '.join(sorted(MOVES))}")
    reason, allow = body.get("reason"), body.get("allow_out_of_scope", False)
    if not isinstance(reason, str | None) or not isinstance(allow, bool):
        return _refused(400, "'reason' must be text and 'allow_out_of_scope' true or false")
    reason = (reason or "").strip() or None
    if Action(action) is Action.REJECT and reason is None:
        return _refused(400, "a reject needs a reason: say why")
    return await _run(request, lambda queue, web: _move(queue, web, request.path_params["job"],
                                                        Action(action), reason, allow))


async def refresh(request: Request) -> Response:
    """Fetch the remote now rather than at the next look: open pages update if it moved."""
    web = web_of(request)
    web.watcher.poke()
    return JSONResponse({"ok": True, "message": "fetching the remote"})


async def halt(request: Request) -> Response:
    body = await _body(request)
    if isinstance(body, str):
        return _refused(400, body)
    reason = body.get("reason")
    if not isinstance(reason, str | None):
        return _refused(400, "'reason' must be text")
    reason = (reason or "").strip()
    if not reason:
        return _refused(400, "a halt needs a reason: say why, so the fleet knows")
    from aq.usecases.fleet import halt as halt_queue

    return await _run(request, lambda queue, web: {
        "halted": halt_queue(queue, reason=reason, who=web.who, now=web.clock()), "reason": reason})


async def resume(request: Request) -> Response:
    from aq.usecases.fleet import resume as resume_queue

    return await _run(request, lambda queue, web: {"resumed": resume_queue(queue, who=web.who)})


def _move(queue: Any, web: Any, ref: str, action: Action, reason: str | None,
          allow_out_of_scope: bool) -> dict[str, Any]:
    from aq.usecases.moves import move_job

    if queue.remote is not None:  # a remote that does not answer is said by the move itself
        with contextlib.suppress(AqError):
            queue.refresh_from_remote(FETCH_WAIT)
    moved = move_job(queue, ref, action, who=web.who, now=web.clock(), env=web.env,
                     reason=reason, allow_out_of_scope=allow_out_of_scope)
    said = [item.message for item in moved.tracker if not item.ok]
    return {"job": moved.job_id, "from": str(moved.source), "to": str(moved.target),
            "message": f"{moved.job_id}: {moved.source} -> {moved.target}",
            "tracker": said}


async def _run(request: Request, change: Any) -> Response:
    """`change(queue, web)` in a worker thread, holding the queue; the watcher looks again at
    once, so every open page shows the result."""
    import asyncio

    web = web_of(request)

    def held() -> Any:
        with web.queue() as queue:
            return change(queue, web)
    try:
        result = await asyncio.to_thread(held)
    except AqError as err:
        return _refused(409, str(err))
    finally:
        web.watcher.poke()
    return JSONResponse({"ok": True, **result})


def _refused(status: int, message: str) -> Response:
    return JSONResponse({"ok": False, "error": message}, status_code=status)


MAX_BODY = 64 * 1024  # a move's or a halt's JSON: a reason of a few lines, and a flag


async def _body(request: Request) -> dict[str, Any] | str:
    """The request's JSON object, or why it is none (a body bigger than any move needs is not
    read beyond MAX_BODY)."""
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            return f"the request's body is over {MAX_BODY:,} bytes: a move needs a reason of a few lines"
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    return body if isinstance(body, dict) else "the request's body must be a JSON object"
