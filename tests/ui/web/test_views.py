"""The fleet, DAG and stats pages of `aq web`, fetched over HTTP from a real `aq web` process
serving a real queue (and, for the fleet, a queue with a bare remote that a worker ran on)."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from aq.store.queue import Queue
from aq.ui.web.views import _graph
from tests.helpers.cli import run_aq
from tests.helpers.fleet import fleet_in
from tests.helpers.git import git
from tests.helpers.queue import PAID_ENGINE, configure, paid_body, stage_of, write_job
from tests.helpers.web import serve_web


def row_of(html: str, attribute: str, value: str) -> list[str]:
    """The text of each cell of the table row `<tr ATTRIBUTE="VALUE">`, tags stripped."""
    found = re.search(rf'<tr {attribute}="{re.escape(value)}">(.*?)</tr>', html, re.S)
    assert found, f"no row {attribute}={value!r} in:\n{html}"
    return [re.sub(r"<[^>]+>", "", cell).strip()
            for cell in re.findall(r"<td[^>]*>(.*?)</td>", found.group(1), re.S)]


def live_part(html: str) -> str:
    start = html.index('<div id="live-part">')
    return html[start:html.index("</main>")]


@pytest.fixture
def drained(queue_root: Path) -> Path:
    """A queue whose worker w1 ran a paid job (verify passed, then shipped by hand) and a job
    that failed, with a daily budget in aq.yaml."""
    config = queue_root / "aq.yaml"
    config.write_text(config.read_text() + PAID_ENGINE)
    configure(queue_root, budget={"usd_per_day": 100})
    assert run_aq("add", "--id", "paid", "--body", paid_body(0.25), "--engine", "paid",
                  "--verify", "true", cwd=queue_root).returncode == 0
    assert run_aq("add", "--id", "broken", "--body", "exit 3", "--retry-max", "0",
                  cwd=queue_root).returncode == 0
    ran = run_aq("run", "--drain", "--worker", "w1", "--poll", "0.1", cwd=queue_root, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert run_aq("ship", "paid", cwd=queue_root).returncode == 0
    assert (stage_of(queue_root, "paid"), stage_of(queue_root, "broken")) == ("shipped", "failed")
    return queue_root


# --- fleet -------------------------------------------------------------------------------------

def test_the_fleet_page_of_a_queue_without_a_remote_says_so_and_shows_the_days_work(
        drained: Path) -> None:
    """A local queue has no heartbeats: the page says why in a line (no error page), and still
    lists the worker with its claims and failures of the last day, and the budget used."""
    with serve_web(drained) as web:
        status, html = web.get("/fleet")
    assert status == 200, html
    assert "this queue has no git remote" in live_part(html)
    cells = row_of(html, "data-worker", "w1")
    assert cells[2] == "no heartbeat on the remote"
    assert (cells[5], cells[6]) == ("2", "1"), cells  # claims, failures
    assert re.search(r"cost \$0\.25\d* of \$100\.00 a day \(0%\)", html), live_part(html)
    assert '<form class="post" action="/fleet/halt"' in html and 'name="reason"' in html


def test_the_fleet_page_shows_a_worker_that_ran_on_the_remote_with_its_claims(
        tmp_path: Path) -> None:
    """With a bare remote, a worker that drained a clone appears from its heartbeat: its host,
    how long ago it beat, its capabilities, its claims and failures of the day."""
    with fleet_in(tmp_path, clones=1) as fleet:
        clone = fleet.clones[0]
        assert run_aq("add", "--id", "fine", "--body", "echo fine", cwd=clone).returncode == 0
        assert run_aq("add", "--id", "bad", "--body", "exit 3", "--retry-max", "0",
                      cwd=clone).returncode == 0
        ran = run_aq("run", "--drain", "--worker", "w1", "--poll", "0.1", cwd=clone,
                     process=True, timeout=120)
        assert ran.returncode == 0, ran.stderr
        with serve_web(fleet.seed) as web:
            status, html = web.get("/fleet")
        assert status == 200, html
        assert "no git remote" not in html and "cannot reach" not in html
        worker, host, beat, capabilities, held, claims, failures, _ = row_of(html, "data-worker", "w1")
        assert worker.startswith("w1") and "(stopped)" in worker  # a drain ends: it said so
        assert host == socket.gethostname()
        assert beat == "first seen now" or beat.endswith("ago") or "ago (its clock)" in beat, beat
        assert "engine:shell" in capabilities.split(), capabilities
        assert (held, claims, failures) == ("none", "2", "1")


def test_the_fleet_page_says_when_the_remote_does_not_answer(tmp_path: Path) -> None:
    """A remote gone away is a line on the fleet page (status 200), not an error page."""
    with fleet_in(tmp_path, clones=0) as fleet, serve_web(fleet.seed) as web:
        fleet.bare.rename(tmp_path / "gone.git")
        status, html = web.get("/fleet")
    assert status == 200, html
    assert "cannot reach the queue&#39;s remote &#39;origin&#39;" in live_part(html)


def test_halt_and_resume_from_the_fleet_page(queue_root: Path) -> None:
    """A halt without a reason is refused (400) and changes nothing; with one it makes
    queue/HALT and the page says why, with a resume button; resume removes it."""
    halt_file = queue_root / "queue" / "HALT"
    head = git(queue_root, "rev-parse", "HEAD")
    with serve_web(queue_root) as web:
        for body in ({}, {"reason": "   "}):
            status, said = web.post("/fleet/halt", body)
            assert (status, said["ok"]) == (400, False), said
            assert "reason" in said["error"]
        assert not halt_file.exists() and git(queue_root, "rev-parse", "HEAD") == head

        status, said = web.post("/fleet/halt", {"reason": "deploy freeze"})
        assert (status, said) == (200, {"ok": True, "halted": True, "reason": "deploy freeze"})
        assert halt_file.read_text().startswith("deploy freeze\n")
        status, html = web.get("/fleet")
        assert status == 200 and "halted: deploy freeze" in html
        assert 'action="/fleet/resume"' in html and 'action="/fleet/halt"' not in html

        status, said = web.post("/fleet/resume")
        assert (status, said) == (200, {"ok": True, "resumed": True})
        assert not halt_file.exists()
        status, html = web.get("/fleet")
        assert "not halted" in html and 'action="/fleet/halt"' in html


def test_a_halt_without_the_csrf_header_is_refused(queue_root: Path) -> None:
    """The halt form's POST needs the page's CSRF value: without it nothing is halted."""
    with serve_web(queue_root) as web:
        status, said = web.post("/fleet/halt", {"reason": "x"}, csrf=False)
    assert status == 403, said
    assert not (queue_root / "queue" / "HALT").exists()


# --- DAG ---------------------------------------------------------------------------------------

def test_the_dag_draws_each_unfinished_job_and_marks_the_edges_that_block(queue_root: Path) -> None:
    """A node per unfinished job, coloured by stage and linking to the job; a dep still in the
    inbox blocks (a dashed red edge), a shipped one does not; a dep naming no job is drawn as
    missing; a cycle of deps is drawn, not a failure; finished jobs nobody needs are left out."""
    write_job(queue_root, "done", "echo done", stage="shipped")
    write_job(queue_root, "old", "echo old", stage="failed")
    write_job(queue_root, "base", "echo base")
    write_job(queue_root, "next", "echo next", deps=["base", "done"])
    write_job(queue_root, "waits", "echo waits", stage="review", deps=["ghost"])
    write_job(queue_root, "ping", "echo ping", deps=["pong"])
    write_job(queue_root, "pong", "echo pong", deps=["ping"])
    with serve_web(queue_root) as web:
        status, html = web.get("/dag")
    assert status == 200, html
    nodes = dict(re.findall(r'<g class="node node-[a-z_]+" data-job="([^"]+)" data-stage="([a-z_]+)"',
                            html))
    assert nodes == {"base": "inbox", "next": "inbox", "done": "shipped", "waits": "review",
                     "ghost": "missing", "ping": "inbox", "pong": "inbox"}
    edges = dict(((dep, job), kind) for kind, dep, job in re.findall(
        r'<path class="(edge(?: blocked)?)" d="[^"]+" data-dep="([^"]+)" data-job="([^"]+)"', html))
    assert edges == {("base", "next"): "edge blocked", ("done", "next"): "edge",
                     ("ghost", "waits"): "edge blocked", ("pong", "ping"): "edge blocked",
                     ("ping", "pong"): "edge blocked"}
    assert '<a href="/jobs/next">' in html and '<a href="/jobs/ghost">' not in html
    assert "left out" not in html


def test_the_dag_stops_at_its_cap_and_counts_what_it_left_out(queue_root: Path) -> None:
    """Past the cap the graph keeps the jobs first in the board's order (by stage, then
    priority) and says how many it left out."""
    write_job(queue_root, "urgent", "echo", priority="critical")
    write_job(queue_root, "built", "echo", stage="review")
    for number in range(4):
        write_job(queue_root, f"later{number}", "echo", priority="low")
    graph, drawn, left_out = _graph(Queue(queue_root).snapshot(), most=3)
    assert (drawn, left_out) == (3, 3)
    assert [node.id for node in graph.nodes] == ["urgent", "later0", "later1"]


# --- stats -------------------------------------------------------------------------------------

def test_the_stats_page_after_a_drained_run_shows_its_figures_and_charts(drained: Path) -> None:
    """Shipped per day as an SVG bar chart with the day's count written on its bar; attempts,
    rates, flow times; the cost per engine as a chart, per profile and engine as tables."""
    with serve_web(drained) as web:
        status, html = web.get("/stats")
        status_7d, html_7d = web.get("/stats?since=7d")
    assert status == 200 and status_7d == 200, html
    for page in (html, html_7d):
        assert re.search(r'id="shipped-total">1 shipped in \d+ day', page)
        chart = page[page.index('<svg class="chart" id="shipped-chart"'):]
        chart = chart[:chart.index("</svg>")]
        assert re.search(r'class="value">1</text>', chart), chart
        assert "day (UTC)" in chart
        assert ("<span>attempts 2</span> · <span>retries 0</span> · <span>reclaims 0</span> · "
                "<span>dead letters 0</span>") in page
        assert row_of(page, "data-name", "paid")[:4] == ["paid", "1", "1", "0"]
        assert row_of(page, "data-name", "shell")[:4] == ["shell", "1", "0", "1"]
        cost = page[page.index('id="cost-by-engine"'):]
        assert re.search(r'<g class="bar" data-label="paid">', cost)
        assert re.search(r'class="value">\$0\.25\d*</text>', cost)
        per_day = page[page.index('id="cost-per-day"'):]
        per_day = per_day[:per_day.index("</svg>")]
        assert len(re.findall(r'class="value">\$0\.25\d*</text>', per_day)) == 1, per_day
    assert row_of(html, "data-worker", "w1")[:2] == ["w1", "2"]
    flow = re.findall(r"<tr><td>(queued → claimed|claimed → done)</td>(.*?)</tr>", html)
    assert [label for label, _ in flow] == ["queued → claimed", "claimed → done"]
    assert all(cells.endswith('<td class="num">2</td>') for _, cells in flow), flow
    assert "The last 7d (since" in html_7d and "All history" in html


def test_a_bad_since_is_one_line_with_status_400(queue_root: Path) -> None:
    """`?since=` that is no duration: 400 and one line saying what is expected, no traceback."""
    with serve_web(queue_root) as web:
        for bad in ("soon", "-3d", "99999d"):
            status, html = web.get(f"/stats?since={bad}")
            assert status == 400, html
            lines = re.findall(r'<p class="refusal">(.*?)</p>', html, re.S)
            assert len(lines) == 1 and "\n" not in lines[0] and bad in lines[0], lines
            assert "Traceback" not in html and "<svg" not in html
            assert "<title>bad request" in html and "not found" not in html  # it was "not found"
        assert "Traceback" not in web.output()
