"""`aq web` in a real browser (Debian's chromium, driven by Playwright): the board and its live
updates from another clone, moves from a job's page and aq's refusals, a running attempt's log
as it is written, the token and CSRF guard off loopback, and screenshots at desktop and phone
sizes. Each test serves a fleet's clone (a bare remote and clones in a tmp dir) with
`aq web --every 0.5` as a real process."""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.helpers.cli import REPO, run_aq
from tests.helpers.fleet import Fleet, fleet_in
from tests.helpers.queue import stage_of
from tests.helpers.waiting import wait_for, wait_until
from tests.helpers.web import Served, serve_web

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page

expect = pytest.importorskip("playwright.sync_api",
                             reason="Playwright is not installed: ./test.sh installs it").expect

# A real chromium, a fleet and aq web per test: ~20 s on 2 cores, so with the other slow runs
pytestmark = pytest.mark.slow

LIVE_MS = 5_000  # a move made in another clone is on an open board within this, with no reload
SIZES = ((1280, 800), (390, 844))  # a laptop, a phone


# --- the queue ------------------------------------------------------------------------------------

def aq(root: Path, *args: str) -> str:
    """`aq ARGS` in a clone, which must succeed: what it printed."""
    ran = run_aq(*args, cwd=root)
    assert ran.returncode == 0, f"aq {' '.join(args)}: {ran.stderr}"
    return ran.stdout


def add(root: Path, job_id: str, body: str, *extra: str) -> None:
    aq(root, "add", "--id", job_id, "--title", f"the {job_id} job", "--body", body, *extra)


def every_stage(root: Path) -> None:
    """Jobs in every stage but building, each moved there by aq: a drained `aq run` of shell
    jobs that exit 0 (to review) or 1 (to failed; with one retry, to dead_letter after two),
    then promote and ship; and one job left in the inbox, waiting on one not yet shipped (so no
    worker takes it)."""
    add(root, "in-review", "echo built it; exit 0")
    add(root, "in-testing", "echo built it; exit 0")
    add(root, "in-shipped", "echo built it; exit 0")
    add(root, "in-failed", "echo it broke; exit 1")
    add(root, "in-dead", "echo it broke again; exit 1", "--retry-max", "1", "--retry-backoff", "1s")
    aq(root, "run", "--drain", "--poll", "0.1")
    aq(root, "promote", "in-testing")
    aq(root, "promote", "in-shipped")
    aq(root, "ship", "in-shipped")
    add(root, "in-inbox", "exit 0", "--deps", "in-review")


def waits_for(gate: Path, first: str = "first line", second: str = "second line") -> str:
    """A shell job body: print a line, wait for `gate` to exist, print another. It gives up
    after two minutes: a test that fails before opening the gate leaves no job spinning (the
    engine runs in a session of its own, which the fleet's teardown does not reach)."""
    return (f"echo '{first}'\nn=0\nwhile [ ! -e '{gate}' ] && [ $n -lt 1200 ]; "
            f"do sleep 0.1; n=$((n+1)); done\necho '{second}'")


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """A bare remote, its seed clone (the one served) and one other clone; every process a test
    starts through it is killed at the end."""
    with fleet_in(tmp_path, clones=1) as made:
        yield made


@pytest.fixture
def served(fleet: Fleet) -> Iterator[Served]:
    """`aq web --every 0.5` serving the seed clone."""
    with serve_web(fleet.seed) as web:
        yield web


# --- what a page shows ---------------------------------------------------------------------------------

def opened(page: Page, url: str) -> None:
    """Go to `url`, which must answer 200."""
    answer = page.goto(url)
    assert answer is not None and answer.ok, f"{url}: {answer and answer.status}\n{page.content()}"


def card(page: Page, stage: str, job_id: str) -> Locator:
    return page.locator(f'.column[data-stage="{stage}"] .card[data-job="{job_id}"]')


def board(page: Page) -> dict[str, str]:
    """job id -> the stage of the column its card is in, as the page shows it now."""
    pairs = page.eval_on_selector_all(
        ".column .card", "cards => cards.map(c => [c.dataset.job, c.closest('.column').dataset.stage])")
    return dict(pairs)


def test_the_board_shows_each_job_in_its_stage_and_a_move_in_another_clone_live(
        fleet: Fleet, served: Served, page: Page) -> None:
    """Every job is a card in its stage's column; a job promoted in another clone (pushed to the
    remote) moves to its new column on the open board, without a reload."""
    root = fleet.seed
    every_stage(root)
    gate = fleet.base / "let-in-building-finish"
    add(root, "in-building", waits_for(gate))
    worker = fleet.start(root, "run", "--once", "--poll", "0.1", name="worker")
    wait_for(lambda: stage_of(root, "in-building") == "building", 60, "the worker's claim")

    opened(page, served.url + "/")
    want = {"in-inbox": "inbox", "in-building": "building", "in-review": "review",
            "in-testing": "testing", "in-shipped": "shipped", "in-failed": "failed",
            "in-dead": "dead_letter"}
    wait_until(lambda: board(page) == want, 20)
    assert board(page) == want
    expect(card(page, "review", "in-review")).to_be_visible()
    page.evaluate("window.aqNotReloaded = true")

    other = fleet.clones[0]
    aq(other, "promote", "in-review")
    expect(card(page, "testing", "in-review")).to_have_count(1, timeout=LIVE_MS)
    expect(card(page, "review", "in-review")).to_have_count(0)
    assert page.evaluate("window.aqNotReloaded === true"), "the board was reloaded"

    gate.touch()
    assert fleet.finish(worker) == 0, fleet.err(worker)


def test_ship_from_the_job_page_reaches_the_remote_recorded_as_via_web(
        fleet: Fleet, served: Served, page: Page) -> None:
    """The Ship button of a job in testing, confirmed, ships it: the remote's main holds it in
    queue/shipped and its event says it came through the web."""
    root = fleet.seed
    add(root, "ready", "exit 0")
    aq(root, "run", "--drain", "--poll", "0.1")
    aq(root, "promote", "ready")
    asked: list[str] = []
    page.on("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))

    opened(page, served.url + "/jobs/ready")
    expect(page.locator("#job-stage")).to_have_text("testing")
    page.locator('button.act[data-action="ship"]').click()

    wait_for(lambda: fleet.stage("ready") == "shipped", 60, "ready in queue/shipped on the remote")
    shipped = [e for e in fleet.events("ready", "moved") if e.get("to") == "shipped"]
    assert len(shipped) == 1 and shipped[0]["by"].endswith(" via web"), shipped
    assert asked == ["Ship ready?"]
    expect(page.locator("#job-stage")).to_have_text("shipped")
    expect(page.locator("#refusal")).to_be_hidden()


def test_a_move_on_a_stale_page_shows_aqs_refusal_and_changes_nothing(
        fleet: Fleet, served: Served, page: Page) -> None:
    """A page whose live feed is cut still offers Ship after the job was rejected in another
    clone; clicking it shows aq's one-line refusal and moves nothing, here or on the remote."""
    root = fleet.seed
    add(root, "stale", "exit 0")
    aq(root, "run", "--drain", "--poll", "0.1")
    aq(root, "promote", "stale")
    page.route("**/live", lambda route: route.abort())  # the page never hears of the reject
    page.on("dialog", lambda dialog: dialog.accept())
    opened(page, served.url + "/jobs/stale")
    expect(page.locator('button.act[data-action="ship"]')).to_be_visible()

    aq(fleet.clones[0], "reject", "stale", "--reason", "not good enough")
    tip = fleet.tip()
    page.locator('button.act[data-action="ship"]').click()

    refusal = page.locator("#refusal")
    expect(refusal).to_be_visible()
    expect(refusal).to_contain_text("aq: cannot ship stale: it is in failed")
    assert fleet.tip() == tip
    assert fleet.stage("stale") == "failed"
    assert stage_of(root, "stale") == "failed"


def test_the_log_of_a_running_attempt_shows_lines_as_they_are_written(
        fleet: Fleet, served: Served, page: Page) -> None:
    """A worker in the served clone runs a job that prints a line, waits, prints another: the
    job's page shows the first while it waits, and the second once it goes on."""
    root = fleet.seed
    gate = fleet.base / "go-on"
    add(root, "talks", waits_for(gate, "hello from the job", "and goodbye"))
    worker = fleet.start(root, "run", "--once", "--poll", "0.1", name="worker")
    wait_for(lambda: stage_of(root, "talks") == "building", 60, "the worker's claim")

    # the live log exists once its first line is in it: between the claim and that, find_log
    # takes the attempt for one on another machine and the page would get no stream
    wait_for(lambda: "hello from the job" in served.get("/jobs/talks/log")[1], 60,
             "the job's first line in its log")
    opened(page, served.url + "/jobs/talks")
    log = page.locator("#log")
    expect(log).to_have_attribute("data-stream", re.compile(r"/jobs/talks/log/stream"))
    expect(log).to_contain_text("hello from the job")
    assert "and goodbye" not in log.inner_text()

    gate.touch()
    expect(log).to_contain_text("and goodbye")
    assert fleet.finish(worker) == 0, fleet.err(worker)


# --- off loopback: the token and the CSRF value ----------------------------------------------------------

def test_off_loopback_a_request_needs_the_token_and_a_change_the_csrf_value(
        fleet: Fleet, page: Page) -> None:
    """Bound to every address, aq web prints a new token: without it a request gets 401, with
    it a POST without the CSRF header gets 403, and neither moves the job; a browser given the
    token once in the address keeps it in a cookie and sees the pages."""
    root = fleet.seed
    add(root, "guarded", "exit 0")
    aq(root, "run", "--drain", "--poll", "0.1")
    aq(root, "promote", "guarded")
    tip = fleet.tip()
    with serve_web(root, "--host", "0.0.0.0") as web:
        assert web.token, f"no token in what aq web printed:\n{web.output()}"
        address = web.url.replace("//0.0.0.0:", "//127.0.0.1:")
        assert http(address + "/")[0] == 401
        assert http(address + "/jobs/guarded")[0] == 401
        assert http(address + "/jobs/guarded/ship", "POST")[0] == 401
        assert web.get("/jobs/guarded")[0] == 200  # the token as a bearer
        status, said = web.post("/jobs/guarded/ship", {}, csrf=False)
        assert status == 403 and "CSRF" in said, said
        assert fleet.tip() == tip and stage_of(root, "guarded") == "testing"

        opened(page, f"{address}/?token={web.token}")
        assert "token" not in page.url, page.url  # sent on without it, kept in a cookie
        expect(card(page, "testing", "guarded")).to_have_count(1)
        opened(page, address + "/jobs/guarded")
        expect(page.locator("#job-stage")).to_have_text("testing")
        kept = {cookie["name"]: cookie for cookie in page.context.cookies()}
        assert kept["aq_token"]["value"] == web.token and kept["aq_token"]["httpOnly"]


def http(url: str, method: str = "GET") -> tuple[int, str]:
    """A plain request carrying nothing (no token, no CSRF value): its status and body."""
    request = urllib.request.Request(url, data=b"{}" if method == "POST" else None, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.read().decode()


# --- screenshots ------------------------------------------------------------------------------------------------

def artifacts() -> Path:
    """Where screenshots go: $AQ_TEST_ARTIFACTS, else .artifacts/web in the repository."""
    folder = Path(os.environ.get("AQ_TEST_ARTIFACTS") or REPO / ".artifacts" / "web")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_screenshots_of_the_board_and_a_job_at_desktop_and_phone_sizes(
        fleet: Fleet, served: Served, browser: Browser) -> None:
    """The board and a job's page are shot at 1280x800 and 390x844 into the artifacts folder;
    at either size both fit the screen's width (no sideways scrolling on a phone)."""
    every_stage(fleet.seed)
    folder = artifacts()
    shots = []
    for width, height in SIZES:
        context = browser.new_context(viewport={"width": width, "height": height})
        try:
            page = context.new_page()
            for name, path, shown in (("board", "/", card(page, "dead_letter", "in-dead")),
                                      ("job", "/jobs/in-failed", page.locator("#log"))):
                shot = folder / f"{name}-{width}x{height}.png"
                shot.unlink(missing_ok=True)  # a shot left by an earlier run proves nothing
                opened(page, served.url + path)
                expect(shown).to_contain_text("it broke" if name == "job" else "in-dead")
                wide = page.evaluate("document.documentElement.scrollWidth")
                assert wide <= width + 2, f"{path} is {wide}px wide on a {width}px screen"
                page.screenshot(path=shot, full_page=True)
                shots.append(shot)
        finally:
            context.close()
    for shot in shots:
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{shot} is not a PNG"
        assert shot.stat().st_size > 10_000, f"{shot} is only {shot.stat().st_size} bytes"
