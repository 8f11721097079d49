"""`/metrics` of `aq web`: the queue's figures for Prometheus to scrape (aq.ui.prometheus), read
afresh at every scrape. Off loopback the scraper sends the server's token like any client
(`authorization: {credentials: TOKEN}` in Prometheus's scrape config)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from aq.errors import AqError
from aq.ui.web.pages import web_of


def metrics(request: Request) -> Response:
    from aq.ui.prometheus import exposition
    from aq.usecases.metrics import read_metrics

    web = web_of(request)
    try:
        with web.queue() as queue:
            figures = read_metrics(queue, now=web.clock(), monotonic=web.monotonic())
    except AqError as err:  # aq.yaml broken meanwhile: one line, as everywhere
        return PlainTextResponse(f"aq web: {err}\n", status_code=503)
    body, content_type = exposition(figures, request.headers.get("accept"))
    return Response(body, headers={"content-type": content_type})
