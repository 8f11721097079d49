"""`aq web` put together: the routes, the static files (served from the installed package:
no CDN, the machine may be offline), the guard in front, and `serve` to run it all."""

from __future__ import annotations

import secrets
import socket
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from aq.errors import UsageError
from aq.ui.web import actions, pages, views
from aq.ui.web.context import Web
from aq.ui.web.guard import Access, Guard, is_loopback
from aq.ui.web.metrics import metrics


def build(web: Web, access: Access) -> Guard:
    routes = [
        Route("/", pages.board),
        Route("/stage/{stage}", pages.stage),
        Route("/jobs/{job}", pages.job),
        Route("/jobs/{job}/log", pages.log),
        Route("/jobs/{job}/log/stream", pages.log_stream),
        Route("/jobs/{job}/artifact", pages.artifact),
        Route("/jobs/{job}/diff", pages.diff),
        Route("/jobs/{job}/{action}", actions.move, methods=["POST"]),
        Route("/fleet", views.fleet),
        Route("/fleet/halt", actions.halt, methods=["POST"]),
        Route("/fleet/resume", actions.resume, methods=["POST"]),
        Route("/dag", views.dag),
        Route("/stats", views.stats),
        Route("/metrics", metrics),
        Route("/live", pages.live),
        Route("/refresh", actions.refresh, methods=["POST"]),
        Mount("/static", StaticFiles(packages=[("aq.ui.web", "static")]), name="static"),
    ]
    app = Starlette(routes=routes)
    app.state.web = web
    return Guard(app, access)


def serve(root: Path, *, host: str, port: int, token: str | None, who: str,
          clock: Callable[[], datetime], every: float, open_browser: bool,
          say: Callable[[str], Any] = print) -> None:
    """Serve the queue at `root` until Ctrl-C. Off loopback a token is required: the one given,
    else a new one, printed once in the address."""
    import uvicorn

    if token is None and not is_loopback(host):
        token = secrets.token_urlsafe(24)
    web = Web(root=root, csrf=secrets.token_urlsafe(24), who=who, clock=clock, every=every)
    listening = _listen(host, port)
    port = listening.getsockname()[1]  # --port 0: the one the system gave
    access = Access(host=host, port=port, token=token, csrf=web.csrf)
    config = uvicorn.Config(build(web, access), log_level="warning", access_log=False,
                            lifespan="off", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    web.watcher.start()
    shown = f"[{host}]" if ":" in host else host
    address = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    say(f"aq web: serving {root} at {address}")
    if token:
        say("aq web: anyone with that address can act on the queue: keep the token to yourself")
    sys.stdout.flush()
    if open_browser:
        import webbrowser

        webbrowser.open(address)
    try:
        server.run(sockets=[listening])
    finally:
        web.watcher.stop()
        listening.close()


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a port in use is one clear line."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listening = socket.socket(family, socket.SOCK_STREAM)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listening.bind((host, port))
        listening.listen(128)
    except OSError as err:
        listening.close()
        raise UsageError(f"cannot serve at {host}:{port}: {err.strerror or err}: pick another "
                         "address with --host or port with --port") from None
    listening.set_inheritable(True)
    return listening
