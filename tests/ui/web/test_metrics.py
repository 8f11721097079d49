"""`/metrics` of a real `aq web` process: what Prometheus scrapes, parsed with prometheus-client's
own parsers, the same figures as `aq stats --json`, behind the server's token like any page."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.cli import run_aq
from tests.helpers.queue import write_job
from tests.helpers.web import serve_web


def jobs_per_stage(families: object) -> dict[str, float]:
    assert isinstance(families, list)
    [jobs] = [family for family in families if family.name == "aq_jobs"]
    return {sample.labels["stage"]: sample.value for sample in jobs.samples}


def test_metrics_scraped_from_aq_web_are_the_queues_figures(queue_root: Path) -> None:
    """A scrape in Prometheus's text format gives the jobs per stage and the attempts of
    `aq stats --json`, read at the scrape (a job added meanwhile is counted)."""
    assert run_aq("add", "--id", "fine", "--body", "echo fine", "--verify", "true",
                  cwd=queue_root).returncode == 0
    assert run_aq("add", "--id", "bad", "--body", "exit 3", cwd=queue_root).returncode == 0
    assert run_aq("run", "--drain", "--poll", "0.1", cwd=queue_root, timeout=120).returncode == 0
    stats = json.loads(run_aq("stats", "--json", cwd=queue_root).stdout)
    with serve_web(queue_root) as web:
        status, text = web.get("/metrics", headers={"accept": "text/plain"})
        assert status == 200, text
        families = list(text_string_to_metric_families(text))
        assert jobs_per_stage(families) == {stage: float(count) for stage, count
                                            in stats["jobs_per_stage"].items()}
        [attempts] = [family for family in families if family.name == "aq_attempts"]
        assert sum(sample.value for sample in attempts.samples) == stats["attempts"] == 2
        write_job(queue_root, "new", "echo new")
        status, text = web.get("/metrics", headers={"accept": "text/plain"})
        assert jobs_per_stage(list(text_string_to_metric_families(text)))["inbox"] == 1


def test_a_scraper_asking_for_openmetrics_gets_it(queue_root: Path) -> None:
    """Accept: application/openmetrics-text is answered in OpenMetrics, with its content type."""
    write_job(queue_root, "waiting", "echo hi")
    with serve_web(queue_root) as web:
        request = urllib.request.Request(web.url + "/metrics", headers={
            "accept": "application/openmetrics-text; version=1.0.0"})
        with urllib.request.urlopen(request, timeout=60) as answer:
            content_type, text = answer.headers["content-type"], answer.read().decode()
    assert content_type.startswith("application/openmetrics-text")
    assert text.endswith("# EOF\n")
    assert jobs_per_stage(list(parse_om(text)))["inbox"] == 1  # type: ignore[no-untyped-call]


def test_metrics_need_the_token_of_a_server_that_has_one(queue_root: Path) -> None:
    """A server started with a token answers /metrics only to a scraper that sends it."""
    token = "metrics-token-0123456789"
    with serve_web(queue_root, "--token", token) as web:
        try:
            urllib.request.urlopen(web.url + "/metrics", timeout=60)
            refused = None
        except urllib.error.HTTPError as err:
            refused = err.code
        status, text = web.get("/metrics")  # the helper sends the token as a bearer
    assert refused == 401
    assert status == 200 and "aq_jobs" in text
