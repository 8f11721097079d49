"""aq web's board, stage, job, log and artifact pages and its moves, over HTTP to a real
`aq web` process serving a real queue. The browser tests (test_browser.py) drive the same
pages through chromium; these pin what each route answers, refused input included."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from html import unescape
from pathlib import Path

import pytest

from tests.helpers.cli import Ran, run_aq
from tests.helpers.git import git
from tests.helpers.queue import events, make_queue, stage_of, write_job
from tests.helpers.web import Served, serve_web

Aq = Callable[..., Ran]


def fill(root: Path) -> None:
    """A job in inbox, one failed with a kept log, two in review."""
    write_job(root, "waiting", "echo hi", title="Waiting job", priority="high")
    write_job(root, "broken", "echo broke; exit 3", title="Broken job")
    write_job(root, "done", "echo made it", title="Done job", priority="critical")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "jobs")
    ran = run_aq("run", "--drain", cwd=root)  # done -> review, broken -> failed, waiting -> review
    assert ran.returncode == 0, ran.stderr
    write_job(root, "later", "echo later", title="Later job")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "one more")


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Served]]:
    """One queue and server for the tests that change nothing (or must not)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        root = make_queue(tmp_path_factory.mktemp("shared") / "q", monkeypatch)
        fill(root)
        with serve_web(root) as web:
            yield root, web


@pytest.fixture
def served(queue_root: Path) -> Iterator[Served]:
    """The same queue, of the test's own, for a test that changes it."""
    fill(queue_root)
    with serve_web(queue_root) as web:
        yield web


def cards(html: str, stage: str) -> list[str]:
    column = html.split(f'data-stage="{stage}"', 1)[1].split('<div class="column', 1)[0]
    return re.findall(r'<article class="card[^"]*" data-job="([^"]+)"', column)


def test_the_board_shows_each_job_in_its_stage_with_why_it_failed(shared: tuple[Path, Served]) -> None:
    served = shared[1]
    status, html = served.get("/")
    assert status == 200
    assert cards(html, "inbox") == ["later"]
    assert cards(html, "failed") == ["broken"]
    assert sorted(cards(html, "review")) == ["done", "waiting"]
    assert "attempt 1" in html


def test_a_stage_page_pages_and_searches(shared: tuple[Path, Served]) -> None:
    served = shared[1]
    status, html = served.get("/stage/review?q=done")
    assert status == 200 and 'data-job="done"' in html and 'data-job="waiting"' not in html
    status, html = served.get("/stage/nowhere")
    assert status == 404 and "no stage 'nowhere'" in unescape(html)


def test_a_job_page_offers_only_the_moves_allowed_now(shared: tuple[Path, Served]) -> None:
    served = shared[1]
    status, html = served.get("/jobs/done")
    assert status == 200
    assert set(re.findall(r'data-action="(\w+)"', html)) == {"promote", "ship", "reject", "cancel"}
    status, html = served.get("/jobs/nope")
    assert status == 404 and "no job 'nope'" in unescape(html)


def test_a_move_from_the_web_is_recorded_as_its_person_via_web(served: Served,
                                                             queue_root: Path) -> None:
    status, said = served.post("/jobs/done/promote")
    assert status == 200 and said["ok"] and said["to"] == "testing", said
    assert stage_of(queue_root, "done") == "testing"
    moved = events(queue_root, "done", "moved")[-1]
    assert moved["by"].endswith(" via web") and moved["action"] == "promote"
    assert git(queue_root, "log", "-1", "--format=%s").strip().endswith(" via web")


@pytest.mark.parametrize(("path", "body", "status", "said"), [
    ("/jobs/later/ship", {}, 409, "cannot ship later: it is in inbox"),
    ("/jobs/done/reject", {}, 400, "a reject needs a reason"),
    ("/jobs/done/reject", {"reason": "  "}, 400, "a reject needs a reason"),
    ("/jobs/done/explode", {}, 404, "no move 'explode'"),
    ("/jobs/nope/cancel", {}, 409, "no job 'nope'"),
    ("/jobs/done/cancel", "not json", 400, "must be a JSON object"),
    # a string is not false: "false" shipped past the scope gate (bool of any text is true)
    ("/jobs/done/ship", {"allow_out_of_scope": "false"}, 400,
     "'allow_out_of_scope' true or false"),
    ("/jobs/done/reject", {"reason": ["a"]}, 400, "'reason' must be text"),
    # kept in the event log and the commit: 60 MB were, and the board then took 18 s
    ("/jobs/done/reject", {"reason": "x" * 3000}, 409, "over the 2,000 one may be"),
    ("/jobs/done/reject", {"reason": "x" * 70_000}, 400, "over 65,536 bytes"),
])
def test_a_refused_move_says_why_in_one_line_and_changes_nothing(
        shared: tuple[Path, Served], path: str, body: object, status: int, said: str) -> None:
    queue_root, served = shared
    before = git(queue_root, "rev-parse", "HEAD")
    stages = {job: stage_of(queue_root, job) for job in ("later", "done")}
    answer = _post_raw(served, path, body) if isinstance(body, str) else served.post(path, body)
    assert answer[0] == status and said in answer[1]["error"], answer
    assert "\n" not in answer[1]["error"]
    assert git(queue_root, "rev-parse", "HEAD") == before
    assert {job: stage_of(queue_root, job) for job in stages} == stages


def test_a_reject_with_a_reason_keeps_the_reason(served: Served, queue_root: Path) -> None:
    status, said = served.post("/jobs/waiting/reject", {"reason": "wrong approach"})
    assert status == 200 and said["to"] == "failed"
    assert events(queue_root, "waiting", "moved")[-1]["why"] == "wrong approach"


def test_logs_are_served_as_text_and_artifacts_only_when_kept(shared: tuple[Path, Served]) -> None:
    served = shared[1]
    status, text = served.get("/jobs/broken/log?attempt=1")
    assert status == 200 and "broke" in text
    status, text = served.get("/jobs/later/log")
    assert status == 404 and "has not been run yet" in text
    for path in ("../../aq.yaml", "aq.yaml", "queue/.logs/broken/1.log"):
        status, text = served.get(f"/jobs/broken/artifact?path={path}")
        assert status == 404 and "kept no artifact" in text


def test_the_live_feed_says_the_change_count(shared: tuple[Path, Served]) -> None:
    served = shared[1]
    with urllib.request.urlopen(served.url + "/live", timeout=30) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert stream.readline() == b"event: version\n"
        assert stream.readline().startswith(b"data: ")


def _post_raw(served: Served, path: str, raw: str) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(served.url + path, data=raw.encode(), method="POST",
                                     headers={"x-aq-csrf": served.csrf()})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_a_job_added_meanwhile_by_the_cli_is_on_the_next_board(served: Served,
                                                              queue_root: Path) -> None:
    ran = run_aq("add", "--title", "From the CLI", "-", cwd=queue_root, input="echo cli\n")
    assert ran.returncode == 0, ran.stderr
    status, html = served.get("/")
    assert status == 200 and "From the CLI" in html


def test_a_parent_and_its_children_link_each_other(queue_root: Path, aq: Aq) -> None:
    write_job(queue_root, "fanout", "echo parent")
    git(queue_root, "add", "-A")
    git(queue_root, "commit", "-qm", "parent")
    kid = aq("add", "--parent", "fanout", "--title", "the kid", "--body", "echo kid").stdout.strip()
    with serve_web(queue_root) as web:
        status, page = web.get("/jobs/fanout")
        _, kid_page = web.get(f"/jobs/{kid}")
        _, board = web.get("/")
    assert status == 200 and f'data-child="{kid}"' in page
    assert 'child of <a href="/jobs/fanout">fanout</a>' in kid_page
    assert "children 0/1" in board and 'child of <a href="/jobs/fanout">' in board


def test_a_remote_that_hangs_holds_up_no_page(queue_root: Path) -> None:
    """The watcher's fetch of a remote that does not answer runs beside the pages, not in
    front of them: the board still answers (and the server still starts)."""
    fill(queue_root)
    git(queue_root, "config", "protocol.ext.allow", "always")
    git(queue_root, "remote", "add", "origin", "ext::sleep 60")  # answers nothing for a minute
    with serve_web(queue_root) as web:
        for _ in range(3):  # each while the watcher is stuck in its fetch
            with urllib.request.urlopen(web.url + "/", timeout=30) as answer:
                assert answer.status == 200


def test_a_kept_artifact_is_served_as_plain_text(queue_root: Path) -> None:
    write_job(queue_root, "reporter", "echo '<script>alert(1)</script>' > report.html",
              artifacts=["report.html"])
    assert run_aq("run", "--drain", cwd=queue_root).returncode == 0
    (kept,) = json.loads(run_aq("show", "reporter", "--json", cwd=queue_root).stdout
                         )["attempt_log"][0]["artifacts"]
    assert kept.startswith("queue/.logs/reporter/")
    with serve_web(queue_root) as web, urllib.request.urlopen(
            f"{web.url}/jobs/reporter/artifact?path={kept}", timeout=30) as answer:
        assert answer.headers["content-type"].startswith("text/plain")
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert b"<script>" in answer.read()
