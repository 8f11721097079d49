"""The queue watched by people and programs who are not looking at it: the troubles worth
telling (`alerts`) and its figures for Prometheus (`metrics`)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from aq.errors import AqError, ExitStatus, UsageError
from aq.infra.clock import utc_now as now
from aq.ui.cli.options import JsonOpt, QueueOpt
from aq.ui.cli.session import emit, located

if TYPE_CHECKING:
    from datetime import datetime

    from aq.store.queue import Queue
    from aq.usecases.alerts import Alert


def alerts(
    check: Annotated[bool, typer.Option("--check", help="Exit 1 when any alert is open (for cron "
                     "and scripts).")] = False,
    queue: QueueOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Troubles worth a person's attention: stalled jobs, failure spikes, budgets crossed,
    machines offline, dead letters (thresholds: aq.yaml alerts:)."""
    import time

    from aq.usecases.alerts import alerts_json, current_alerts

    moment = now()
    report = current_alerts(located(queue), now=moment, monotonic=time.monotonic())
    if as_json:
        emit(alerts_json(report))
    else:
        if report.signs.remark:
            print(f"aq: {report.signs.remark}", file=sys.stderr)
        if not report.alerts:
            print("no alerts")
        for alert in report.alerts:
            print(f"{alert.kind:<15} {_ago(alert, moment):>9}  {alert.message}")
    if check and report.alerts:
        raise typer.Exit(ExitStatus.REFUSED)


def _ago(alert: Alert, moment: datetime) -> str:
    from aq.core.durations import format_duration
    from aq.core.events import time_or_none

    since = time_or_none(alert.since)
    return "-" if since is None else f"{format_duration((moment - since).total_seconds())} ago"


def metrics(
    openmetrics: Annotated[bool, typer.Option("--openmetrics", help="OpenMetrics text instead "
                           "of Prometheus's text format.")] = False,
    serve: Annotated[int | None, typer.Option("--serve", metavar="PORT", help="Serve /metrics on "
                     "this port (0: any free one) until Ctrl-C, for Prometheus to scrape.")] = None,
    host: Annotated[str, typer.Option("--host", help="Address --serve listens on (off loopback "
                    "anyone who reaches it reads the figures; aq web's /metrics takes a token).")
                    ] = "127.0.0.1",
    queue: QueueOpt = None,
) -> None:
    """The queue's figures for Prometheus: jobs per stage, oldest ready job, assign latency, run
    durations, verify pass rate, cost, workers, pushes, alerts (counters as 'aq stats' counts)."""
    import time

    from aq.ui.prometheus import render
    from aq.usecases.metrics import read_metrics

    q = located(queue)
    if serve is not None:
        _serve(q, host, serve)
        return
    figures = read_metrics(q, now=now(), monotonic=time.monotonic())
    sys.stdout.write(render(figures, openmetrics=openmetrics).decode())


def _serve(q: Queue, host: str, port: int) -> None:
    """/metrics from a thread of prometheus-client's own server, the queue read afresh (one
    scrape at a time) at each scrape, until Ctrl-C."""
    import threading
    import time

    from prometheus_client.exposition import start_http_server

    from aq.ui.prometheus import registry_of
    from aq.usecases.metrics import Metrics, read_metrics

    if not 0 <= port <= 65535:
        raise UsageError(f"--serve {port} is not a port: give 0 to 65535")
    turn = threading.Lock()

    def read() -> Metrics | None:
        with turn:
            try:
                return read_metrics(q, now=now(), monotonic=time.monotonic())
            except AqError as err:  # said in one line; the scrape is empty, the server goes on
                print(f"aq: {err}", file=sys.stderr, flush=True)
                return None

    try:
        server, _thread = start_http_server(port, addr=host, registry=registry_of(read))
    except OSError as err:
        raise UsageError(f"cannot serve at {host}:{port}: {err.strerror or err}: pick another "
                         "address with --host or port with --serve") from None
    shown = f"[{host}]" if ":" in host else host
    print(f"aq metrics: serving http://{shown}:{server.server_port}/metrics", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
