"""The queue's figures (aq.usecases.metrics) in Prometheus's text format, for `aq metrics` and
`/metrics` of `aq web`.

prometheus-client writes the format: its names, label escaping, histogram buckets and the
OpenMetrics variant are its job, not ours to hand-format. Its global registry and mutable
metric objects suit a long-lived process counting its own events; aq's figures are read from
the queue at each scrape instead, so a collector of our own makes them afresh each time, in a
registry of its own.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from aq.usecases.metrics import Metrics
    from aq.usecases.stats import Percentiles

# seconds: from a job taken at once to one that waited a day; from a quick fix to a long session
ASSIGN_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400)
RUN_BUCKETS = (10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800)
OPENMETRICS = "application/openmetrics-text; version=1.0.0"  # what a scraper asks for it with


class QueueCollector(Collector):
    """Reads the figures afresh at every collection (`read` gives None when it could not: the
    collection is empty)."""

    def __init__(self, read: Callable[[], Metrics | None]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        figures = self.read()
        if figures is not None:
            yield from families(figures)


def registry_of(read: Callable[[], Metrics | None]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)  # no collection at registration
    registry.register(QueueCollector(read))
    return registry


def render(metrics: Metrics, *, openmetrics: bool = False) -> bytes:
    """The text exposition (OpenMetrics with `openmetrics`) of `metrics`."""
    return exposition(metrics, OPENMETRICS if openmetrics else None)[0]


def exposition(metrics: Metrics, accept: str | None) -> tuple[bytes, str]:
    """The body and content type a scraper asked for in its Accept header (OpenMetrics when it
    asks for it, else the Prometheus text format)."""
    from prometheus_client.exposition import choose_encoder

    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry_of(lambda: metrics)), content_type


def families(m: Metrics) -> Iterator[Metric]:
    yield from _now(m)
    yield from _history(m)
    yield _histogram("aq_assign_latency_seconds", "Time from a job entering the inbox (added, "
                     "retried, reclaimed, requeued) to its claim.", m.stats.queued_to_claimed,
                     ASSIGN_BUCKETS)
    yield _histogram("aq_run_duration_seconds", "Time from a claim to the end of its attempt.",
                     m.stats.claimed_to_done, RUN_BUCKETS)


def _now(m: Metrics) -> Iterator[Metric]:
    """Gauges: the queue as it is."""
    jobs = GaugeMetricFamily("aq_jobs", "Jobs in each stage folder.", labels=["stage"])
    for stage, count in m.stats.jobs_per_stage.items():
        jobs.add_metric([stage], count)
    yield jobs
    yield GaugeMetricFamily("aq_ready_jobs", "Inbox jobs nothing keeps from being taken.",
                            value=m.ready)
    yield GaugeMetricFamily("aq_oldest_ready_job_age_seconds", "How long the oldest ready job has "
                            "waited since it last entered the inbox (0: none ready).",
                            value=m.oldest_ready_age, unit="seconds")
    yield GaugeMetricFamily("aq_halted", "1 while queue/HALT stops every claim.",
                            value=int(m.halted))
    if m.workers is not None:
        workers = GaugeMetricFamily("aq_workers", "Workers with a heartbeat on the remote: busy "
                                    "(holding a job), idle, offline (silent, no goodbye).",
                                    labels=["state"])
        for state in ("busy", "idle", "offline"):
            workers.add_metric([state], getattr(m.workers, state))
        yield workers
    alerts = GaugeMetricFamily("aq_alerts", "Alerts open now (aq alerts).", labels=["kind"])
    for kind, count in m.alerts.items():
        alerts.add_metric([kind], count)
    yield alerts


def _history(m: Metrics) -> Iterator[Metric]:
    """Counters: the queue's history in its event logs, as `aq stats` counts it."""
    s = m.stats
    attempts = CounterMetricFamily("aq_attempts", "Attempts by engine and how they ended (other: "
                                   "running, interrupted, lease lost).", labels=["engine", "result"])
    cost = CounterMetricFamily("aq_cost_usd", "What attempts cost, as their engines reported it "
                               "(or aq.yaml prices).", labels=["engine"])
    tokens = CounterMetricFamily("aq_tokens", "Tokens attempts used.", labels=["engine"])
    for row in s.per_engine:
        for result, count in (("ok", row.ok), ("failed", row.failed),
                              ("other", row.attempts - row.ok - row.failed)):
            attempts.add_metric([row.name, result], count)
        if row.cost_usd is not None:
            cost.add_metric([row.name], row.cost_usd)
        if row.tokens is not None:
            tokens.add_metric([row.name], row.tokens)
    yield from (attempts, cost, tokens)
    yield _pass_fail("aq_verify_runs", "Verify runs, passed or failed.", s.verify_runs,
                     s.verify_pass_rate)
    yield _pass_fail("aq_first_attempts", "Jobs' first attempts, passed (verify, or review "
                     "without one) or not.", s.first_attempts, s.first_pass_rate)
    for name, text, value in (
            ("aq_retries", "Failed attempts retried.", s.retries),
            ("aq_reclaims", "Jobs taken back from a worker whose lease expired.", s.reclaims),
            ("aq_dead_letters", "Jobs moved to dead_letter.", s.dead_letters),
            ("aq_shipped", "Jobs shipped.", sum(count for _, count in s.shipped_per_day))):
        yield CounterMetricFamily(name, text, value=value)
    if s.pushes is not None:
        pushes = CounterMetricFamily("aq_pushes", "Pushes to the remote the fleet counted: of the "
                                     "queue's branch (rejected and refused among them) and "
                                     "heartbeats.", labels=["kind"])
        for kind in ("pushes", "rejected", "refused", "heartbeats"):
            pushes.add_metric([kind], getattr(s.pushes, kind))
        yield pushes


def _pass_fail(name: str, text: str, runs: int, rate: float | None) -> CounterMetricFamily:
    passed = round((rate or 0.0) * runs)
    family = CounterMetricFamily(name, text, labels=["result"])
    family.add_metric(["pass"], passed)
    family.add_metric(["fail"], runs - passed)
    return family


def _histogram(name: str, text: str, figures: Percentiles, bounds: Sequence[float]
               ) -> HistogramMetricFamily:
    samples = figures.samples
    buckets = [(repr(float(bound)), float(bisect.bisect_right(samples, bound)))
               for bound in bounds]
    buckets.append(("+Inf", float(len(samples))))
    return HistogramMetricFamily(name, text, buckets=buckets, sum_value=sum(samples),
                                 unit="seconds")
