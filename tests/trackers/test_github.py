"""The GitHub tracker: the REST adapter against a local GitHub stand-in (tests/fake_github.py),
and the whole path through the CLI: an issue imported as a job, its moves posted back, the
posts a down tracker could not take sent later, exactly once, and the token kept out of
everything aq writes."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from aq.store.queue import Queue
from aq.trackers.base import Item, Post, Ref, TrackerError
from aq.trackers.github import MAX_WAIT, GitHub
from aq.trackers.settings import DONE, IN_PROGRESS, GitHubSettings
from tests.helpers.cli import Ran
from tests.helpers.fake_github import FakeGitHub, Request
from tests.helpers.git import git
from tests.helpers.secrets import leaks, scan

Aq = Callable[..., Ran]

# Not a ghp_ shape on purpose: only its place in GITHUB_TOKEN tells aq's scrubber it is secret.
TOKEN = "tok-aq-test-5f0c9a7b3d1e8f2a6c4b0e9d"
REPO = "acme/app"
MARK_START = "<!-- aq:"


@pytest.fixture
def gh() -> Iterator[FakeGitHub]:
    with FakeGitHub(token=TOKEN) as fake:
        yield fake


class Adapter:
    """A GitHub adapter pointed at the fake, whose retry waits are recorded, not slept."""

    def __init__(self, gh: FakeGitHub, env: dict[str, str] | None = None,
                 settings: GitHubSettings | None = None) -> None:
        self.sleeps: list[float] = []
        self.env = env if env is not None else {"GITHUB_TOKEN": TOKEN, "PATH": os.environ["PATH"]}
        self.tracker = GitHub(settings or GitHubSettings(api_url=gh.url), self.env,
                              sleep=self.sleeps.append)


def issue(number: int) -> Ref:
    return Ref("github", f"{REPO}#{number}")


def refused(call: Callable[[], Any]) -> TrackerError:
    """The TrackerError `call` raises, checked to hold no token in its text or its traceback."""
    with pytest.raises(TrackerError) as caught:
        call()
    err = caught.value
    told = "".join(traceback.format_exception(err))
    assert TOKEN not in str(err) and TOKEN not in told, told
    return err


def calls(gh: FakeGitHub, method: str, path_end: str) -> list[Request]:
    return [r for r in gh.requests if r.method == method and r.path.endswith(path_end)]


# --- reading ----------------------------------------------------------------------------------

def test_fetch_maps_an_issue_to_an_item(gh: FakeGitHub) -> None:
    """An issue's title, body (CRLF made LF), labels, state and page become the item; a
    priority:high label is aq's priority high; a closed issue reads as not open."""
    gh.add_issue(REPO, "Fix the frobnicator", "step one\r\nstep two",
                 labels=["priority:high", "bug"])
    gh.add_issue(REPO, "Old news", "", state="closed")
    tracker = Adapter(gh).tracker
    item = tracker.fetch(issue(1))
    assert item == Item(ref=issue(1), title="Fix the frobnicator", body="step one\nstep two",
                        labels=("bug", "priority:high"), priority="high", status="open",
                        open=True, url=f"https://github.com/{REPO}/issues/1")
    closed = tracker.fetch(issue(2))
    assert (closed.open, closed.status, closed.body, closed.priority) == (False, "closed", "", None)
    auth = {r.headers.get("authorization") for r in gh.requests}
    assert auth == {f"Bearer {TOKEN}"}


def test_fetch_refuses_a_pull_request(gh: FakeGitHub) -> None:
    """A number that is a pull request is refused, saying only issues are imported."""
    gh.add_issue(REPO, "An issue")
    gh.add_issue(REPO, "A change", pull_request=True)
    err = refused(lambda: Adapter(gh).tracker.fetch(issue(2)))
    assert "github:acme/app#2 is a pull request" in str(err) and "issues only" in str(err)


def test_fetch_of_a_missing_issue_names_it_and_what_to_check(gh: FakeGitHub) -> None:
    """A 404 names the issue and says to check owner, repo, number and the token's reach; it is
    not worth retrying."""
    gh.add_issue(REPO, "The only one")
    err = refused(lambda: Adapter(gh).tracker.fetch(issue(9)))
    assert "acme/app#9" in str(err) and "404" in str(err)
    assert "owner, repo and number" in str(err) and "private" in str(err)
    assert err.status == 404 and not err.retry


def test_fetch_works_without_a_token_on_a_public_repo(gh: FakeGitHub, tmp_path: Path) -> None:
    """Reading needs no token: with none (and no gh), the request goes out unauthenticated."""
    gh.add_issue(REPO, "Public")
    item = Adapter(gh, env={"PATH": str(tmp_path)}).tracker.fetch(issue(1))
    assert item.title == "Public"
    assert "authorization" not in gh.requests[-1].headers


def test_query_finds_labelled_open_issues_across_pages(gh: FakeGitHub) -> None:
    """A query lists the repo's open issues labelled agent:run (the issues list: no search cap
    or quota), follows the Link header page by page, and leaves out closed, unlabelled and
    pull-request items."""
    wanted = [gh.add_issue(REPO, f"Task {n}", labels=["agent:run"]) for n in range(5)]
    gh.add_issue(REPO, "Closed", labels=["agent:run"], state="closed")
    gh.add_issue(REPO, "Unlabelled")
    gh.add_issue(REPO, "A PR", labels=["agent:run"], pull_request=True)
    gh.add_issue("acme/other", "Elsewhere", labels=["agent:run"])
    gh.per_page_max = 2
    items = Adapter(gh).tracker.query(REPO, None)
    assert sorted(int(i.ref.item.split("#")[1]) for i in items) == wanted
    assert all(i.open and "agent:run" in i.labels for i in items)
    listed = calls(gh, "GET", f"/repos/{REPO}/issues")
    assert [r.query.get("page") for r in listed] == [None, "2", "3"]  # 5 issues and the PR
    assert (listed[0].query["labels"], listed[0].query["state"]) == ("agent:run", "open")
    assert calls(gh, "GET", "/search/issues") == []


def test_a_search_past_githubs_thousand_results_is_refused(gh: FakeGitHub) -> None:
    """Words after the repo make it a search; one finding more than the 1,000 results GitHub
    returns is refused, saying to narrow it, rather than importing a part."""
    for n in range(1001):
        gh.add_issue(REPO, f"Bulk {n}", labels=["agent:run"])
    err = refused(lambda: Adapter(gh).tracker.query(f"{REPO} bulk", None))
    assert "1001 issues" in str(err) and "narrow it" in str(err) and not err.retry
    q = calls(gh, "GET", "/search/issues")[0].query["q"]
    assert "repo:acme/app" in q and "is:issue" in q and "is:open" in q and 'label:"agent:run"' in q


def test_query_honours_an_explicit_label_and_extra_words(gh: FakeGitHub) -> None:
    """The label passed replaces agent:run, and words after the repo narrow the search."""
    gh.add_issue(REPO, "Frobnicate the widget", labels=["ready"])
    gh.add_issue(REPO, "Polish the widget", labels=["ready"])
    gh.add_issue(REPO, "Frobnicate the gadget", labels=["agent:run"])
    tracker = Adapter(gh).tracker
    assert [i.title for i in tracker.query(REPO, "ready")] == ["Polish the widget",
                                                                "Frobnicate the widget"]
    assert [i.title for i in tracker.query(f"{REPO} frobnicate", "ready")] == [
        "Frobnicate the widget"]
    assert [i.title for i in tracker.query(f"{REPO} label:ready", None)] == [
        "Polish the widget", "Frobnicate the widget"]


def test_query_excluding_a_label_still_wants_the_run_label(gh: FakeGitHub) -> None:
    """Excluding a label (-label:blocked) narrows the agent:run issues; it does not widen the
    query to every open issue of the repo."""
    gh.add_issue(REPO, "Go", labels=["agent:run"])
    gh.add_issue(REPO, "Held", labels=["agent:run", "blocked"])
    gh.add_issue(REPO, "Someone's idea, not for agents")
    items = Adapter(gh).tracker.query(f"{REPO} -label:blocked", None)
    assert [i.title for i in items] == ["Go"]


def test_a_query_that_is_not_a_repo_is_refused(gh: FakeGitHub) -> None:
    """A query not starting with OWNER/REPO is refused before any request, with an example."""
    err = refused(lambda: Adapter(gh).tracker.query("acme", None))
    assert "github:OWNER/REPO" in str(err) and gh.requests == []


# --- writing ----------------------------------------------------------------------------------

def test_posting_in_progress_labels_the_issue_and_comments_with_a_marker(gh: FakeGitHub) -> None:
    """An in-progress post adds aq:in-progress and one comment ending with <!-- aq:KEY -->;
    it returns the comment's page."""
    gh.add_issue(REPO, "Build it", labels=["agent:run"])
    url = Adapter(gh).tracker.post(issue(1), Post("k1", "building, attempt 1", IN_PROGRESS))
    assert gh.labels(REPO, 1) == ["agent:run", "aq:in-progress"]
    assert gh.comments(REPO, 1) == ["building, attempt 1\n\n<!-- aq:k1 -->"]
    assert url is not None and url.startswith(f"https://github.com/{REPO}/issues/1#issuecomment-")
    assert gh.state(REPO, 1) == "open"


def test_posting_done_removes_the_label_and_closes_as_completed(gh: FakeGitHub) -> None:
    """A done post removes aq:in-progress (one already gone is fine), closes the issue as
    completed and comments."""
    gh.add_issue(REPO, "Labelled", labels=["aq:in-progress", "bug"])
    gh.add_issue(REPO, "Never labelled", labels=["bug"])
    tracker = Adapter(gh).tracker
    for number in (1, 2):
        tracker.post(issue(number), Post(f"ship{number}", "shipped", DONE))
        assert gh.labels(REPO, number) == ["bug"]
        assert (gh.state(REPO, number), gh.state_reason(REPO, number)) == ("closed", "completed")
        assert gh.comments(REPO, number) == [f"shipped\n\n<!-- aq:ship{number} -->"]
    assert calls(gh, "DELETE", "/labels/aq%3Ain-progress")  # the label's ':' is escaped


def test_posting_done_leaves_the_issue_open_when_close_on_ship_is_off(gh: FakeGitHub) -> None:
    """With close_on_ship false, done removes the label and comments, and the issue stays open."""
    gh.add_issue(REPO, "Keep open", labels=["aq:in-progress"])
    settings = GitHubSettings(api_url=gh.url, close_on_ship=False)
    Adapter(gh, settings=settings).tracker.post(issue(1), Post("s", "shipped", DONE))
    assert gh.state(REPO, 1) == "open" and gh.labels(REPO, 1) == []
    assert calls(gh, "PATCH", "/issues/1") == []


def test_the_same_post_twice_makes_one_comment_even_when_it_is_on_page_two(
        gh: FakeGitHub) -> None:
    """Sending a post again finds its marker among the comments, on a later page too, and
    makes no second comment; it returns the first comment's page."""
    gh.add_issue(REPO, "Busy issue")
    gh.add_comment(REPO, 1, "first words")
    gh.add_comment(REPO, 1, "more words, quoting <!-- aq:other -->")
    gh.per_page_max = 2
    tracker = Adapter(gh).tracker
    post = Post("k7", "attempt 1 finished", None)
    first = tracker.post(issue(1), post)
    again = tracker.post(issue(1), post)
    assert again == first
    assert gh.comments(REPO, 1)[2:] == ["attempt 1 finished\n\n<!-- aq:k7 -->"]
    assert [r.query.get("page") for r in calls(gh, "GET", "/comments")][-2:] == [None, "2"]
    assert len(calls(gh, "POST", "/comments")) == 1


# --- errors -----------------------------------------------------------------------------------

def test_a_bad_token_is_reported_as_wrong_and_not_retried(gh: FakeGitHub) -> None:
    """A 401 says the token in GITHUB_TOKEN is wrong or expired, once, without retrying."""
    gh.add_issue(REPO, "Secret plans")
    wrong = "tok-wrong-0000000000000000"
    adapter = Adapter(gh, env={"GITHUB_TOKEN": wrong, "PATH": os.environ["PATH"]})
    err = refused(lambda: adapter.tracker.fetch(issue(1)))
    assert "401" in str(err) and "GITHUB_TOKEN" in str(err) and "wrong or expired" in str(err)
    assert wrong not in "".join(traceback.format_exception(err))
    assert not err.retry and adapter.sleeps == [] and len(gh.requests) == 1


def test_posting_without_any_token_names_github_token(gh: FakeGitHub, tmp_path: Path) -> None:
    """With no GITHUB_TOKEN and no gh on PATH, a post is refused before any request, saying
    to set GITHUB_TOKEN or log in with gh."""
    gh.add_issue(REPO, "Needs a token")
    err = refused(lambda: Adapter(gh, env={"PATH": str(tmp_path)}).tracker.post(
        issue(1), Post("k", "hello", IN_PROGRESS)))
    assert "no GitHub token" in str(err) and "GITHUB_TOKEN" in str(err) and "gh auth login" in str(err)
    assert gh.requests == [] and not err.retry


def test_forbidden_says_the_token_needs_access(gh: FakeGitHub) -> None:
    """A 403 that is not a rate limit says the token needs access to the issues; not retried."""
    gh.add_issue(REPO, "Locked")
    gh.fail_next(403, message="Resource not accessible by personal access token")
    adapter = Adapter(gh)
    err = refused(lambda: adapter.tracker.post(issue(1), Post("k", "hi", IN_PROGRESS)))
    assert "403" in str(err) and "needs access" in str(err)
    assert "Resource not accessible" in str(err)
    assert not err.retry and adapter.sleeps == []


def test_a_primary_rate_limit_lifting_soon_is_waited_for(gh: FakeGitHub) -> None:
    """A 403 with x-ratelimit-remaining 0 and a reset a moment away: the adapter waits until
    the reset, then succeeds."""
    gh.add_issue(REPO, "Patience")
    gh.rate_limit_next(reset_in=1)
    adapter = Adapter(gh)
    assert adapter.tracker.fetch(issue(1)).title == "Patience"
    assert len(adapter.sleeps) == 1 and 1.0 <= adapter.sleeps[0] <= 3.0
    assert len(gh.requests) == 2


def test_a_rate_limit_lifting_late_is_reported_not_slept_through(gh: FakeGitHub) -> None:
    """A rate limit lifting in an hour is a retryable error saying "rate limit", with no long
    sleep."""
    gh.add_issue(REPO, "Later")
    gh.rate_limit_next(reset_in=3600)
    adapter = Adapter(gh)
    err = refused(lambda: adapter.tracker.fetch(issue(1)))
    assert err.retry and "rate limit" in str(err) and "acme/app#1" in str(err)
    assert adapter.sleeps == []  # not a wait of an hour, nor of MAX_WAIT
    assert MAX_WAIT < 3600


def test_a_secondary_rate_limit_waits_for_retry_after(gh: FakeGitHub) -> None:
    """A secondary rate limit (403 with retry-after) waits that many seconds, then succeeds."""
    gh.add_issue(REPO, "Slow down")
    gh.rate_limit_next(secondary=True, reset_in=2)
    adapter = Adapter(gh)
    adapter.tracker.post(issue(1), Post("k", "hi", None))
    assert adapter.sleeps == [2.0]
    assert gh.comments(REPO, 1) == ["hi\n\n<!-- aq:k -->"]


def test_a_429_without_retry_after_is_a_rate_limit_to_retry(gh: FakeGitHub) -> None:
    """GitHub's docs: a secondary limit may come as 429 with no retry-after ("wait at least a
    minute"): it is a rate limit, worth trying again later."""
    gh.add_issue(REPO, "Too many")
    gh.fail_next(429, times=10)
    err = refused(lambda: Adapter(gh).tracker.fetch(issue(1)))
    assert err.retry and "rate limit" in str(err)


def test_a_server_error_is_retried_until_it_passes(gh: FakeGitHub) -> None:
    """Two 500s, then an answer: the adapter backs off 1 s, 2 s and succeeds."""
    gh.add_issue(REPO, "Flaky")
    gh.fail_next(500, times=2)
    adapter = Adapter(gh)
    assert adapter.tracker.fetch(issue(1)).title == "Flaky"
    assert adapter.sleeps == [1.0, 2.0] and len(gh.requests) == 3


def test_a_server_error_every_time_is_a_retryable_error(gh: FakeGitHub) -> None:
    """500 on every try: after four tries the error says GitHub answered 500 and to try later."""
    gh.add_issue(REPO, "Down")
    gh.fail_next(500, times=100)
    adapter = Adapter(gh)
    err = refused(lambda: adapter.tracker.post(issue(1), Post("k", "hi", None)))
    assert err.retry and "500" in str(err) and "tries again later" in str(err)
    assert adapter.sleeps == [1.0, 2.0, 4.0] and len(gh.requests) == 4
    assert gh.comments(REPO, 1) == []


def test_a_dropped_connection_is_retried(gh: FakeGitHub) -> None:
    """A connection closed without an answer is tried again after a second."""
    gh.add_issue(REPO, "Wobbly network")
    gh.fail_next(0)
    adapter = Adapter(gh)
    assert adapter.tracker.fetch(issue(1)).title == "Wobbly network"
    assert adapter.sleeps == [1.0] and len(gh.requests) == 2


def test_an_unreachable_server_is_a_retryable_error(tmp_path: Path) -> None:
    """Nothing listening at api_url: a retryable error naming the server, after backing off."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sleeps: list[float] = []
    tracker = GitHub(GitHubSettings(api_url=f"http://127.0.0.1:{port}"),
                     {"GITHUB_TOKEN": TOKEN, "PATH": str(tmp_path)}, sleep=sleeps.append)
    err = refused(lambda: tracker.fetch(issue(1)))
    assert err.retry and f"127.0.0.1:{port}" in str(err) and "did not answer" in str(err)
    assert sleeps == [1.0, 2.0, 4.0]


class TruncatingServer:
    """Answers every request with headers promising more body than it sends, then hangs up."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                             b"content-length: 500\r\n\r\n{\"number\": 1, \"tit")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept()
        self.sock.close()


def test_a_response_cut_short_is_a_retryable_error(tmp_path: Path) -> None:
    """A connection that breaks in the middle of a body is a tracker error worth retrying, not
    an exception that reaches the user as a traceback."""
    server = TruncatingServer()
    try:
        sleeps: list[float] = []
        tracker = GitHub(GitHubSettings(api_url=server.url),
                         {"GITHUB_TOKEN": TOKEN, "PATH": str(tmp_path)}, sleep=sleeps.append)
        err = refused(lambda: tracker.fetch(issue(1)))
        assert err.retry
    finally:
        server.close()


class LosingProxy:
    """Passes requests on to the fake GitHub, but hangs up instead of relaying the answer to
    the first request matching `method` and `path_end`: the work is done, the client never
    hears so (a 502 from a load balancer, a reset connection)."""

    def __init__(self, target: str, method: str, path_end: str) -> None:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_any(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                conn = http.client.HTTPConnection(urlsplit(target).netloc, timeout=10)
                conn.request(self.command, self.path, body or None, dict(self.headers))
                answer = conn.getresponse()
                data = answer.read()
                conn.close()
                if proxy.armed and self.command == method and self.path.endswith(path_end):
                    proxy.armed = False
                    self.close_connection = True
                    return
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("connection", "transfer-encoding", "server", "date"):
                        self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = do_any

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.armed = True
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_comment_whose_answer_was_lost_is_not_made_twice(gh: FakeGitHub) -> None:
    """A comment GitHub made but whose answer never arrived is not made again: the POST is not
    retried blindly (the post fails, retryable), and the next send finds its marker."""
    gh.add_issue(REPO, "Lossy network")
    proxy = LosingProxy(gh.url, "POST", "/comments")
    try:
        adapter = Adapter(gh, settings=GitHubSettings(api_url=proxy.url))
        err = refused(lambda: adapter.tracker.post(issue(1), Post("k", "hello", None)))
        assert err.retry
    finally:
        proxy.close()
    assert gh.comments(REPO, 1) == ["hello\n\n<!-- aq:k -->"]
    Adapter(gh).tracker.post(issue(1), Post("k", "hello", None))  # sent again later: found
    assert gh.comments(REPO, 1) == ["hello\n\n<!-- aq:k -->"]


# --- the token from gh, and where GitHub is ---------------------------------------------------

def fake_gh(bin_dir: Path, token: str, exit_code: int = 0) -> Path:
    """A `gh` on PATH that prints a token for `gh auth token` and counts its calls."""
    bin_dir.mkdir(exist_ok=True)
    count = bin_dir / "gh-calls"
    script = bin_dir / "gh"
    script.write_text(f'#!/bin/sh\necho "$@" >> {count}\n'
                      f'[ "$1 $2" = "auth token" ] && echo {token} && exit {exit_code}\nexit 4\n')
    script.chmod(0o755)
    return count


def test_without_github_token_the_token_of_gh_auth_is_used(gh: FakeGitHub, tmp_path: Path) -> None:
    """No GITHUB_TOKEN: `gh auth token` (gh found on PATH) gives the token, asked once, and it
    is sent as a Bearer token."""
    gh.add_issue(REPO, "Via gh")
    count = fake_gh(tmp_path / "bin", TOKEN)
    adapter = Adapter(gh, env={"PATH": str(tmp_path / "bin")})
    adapter.tracker.post(issue(1), Post("k", "hello", IN_PROGRESS))
    assert gh.comments(REPO, 1) == ["hello\n\n<!-- aq:k -->"]
    assert {r.headers.get("authorization") for r in gh.requests} == {f"Bearer {TOKEN}"}
    assert count.read_text().splitlines() == ["auth token"]


def test_a_failing_gh_means_no_token(gh: FakeGitHub, tmp_path: Path) -> None:
    """gh exiting non-zero (not logged in) gives no token: a post names GITHUB_TOKEN."""
    gh.add_issue(REPO, "gh is logged out")
    fake_gh(tmp_path / "bin", "not-a-token", exit_code=1)
    err = refused(lambda: Adapter(gh, env={"PATH": str(tmp_path / "bin")}).tracker.post(
        issue(1), Post("k", "hello", None)))
    assert "GITHUB_TOKEN" in str(err) and gh.requests == []


def test_an_enterprise_api_url_keeps_its_path(gh: FakeGitHub) -> None:
    """An Enterprise api_url (https://HOST/api/v3) is the prefix of every request's path."""
    gh.add_issue(REPO, "On prem")
    settings = GitHubSettings(api_url=f"{gh.url}/api/v3")
    refused(lambda: Adapter(gh, settings=settings).tracker.fetch(issue(1)))  # the fake has no prefix
    assert [r.path for r in gh.requests] == ["/api/v3/repos/acme/app/issues/1"]


def test_aq_yaml_trackers_github_is_read(queue_root: Path) -> None:
    """aq.yaml's trackers.github keys reach the settings; a trailing / of api_url is dropped."""
    config = queue_root / "aq.yaml"
    config.write_text(config.read_text() + "\ntrackers:\n  takeover: 5s\n  github:\n"
                      "    api_url: https://ghe.example.com/api/v3/\n    label: ready\n"
                      "    in_progress_label: doing\n    close_on_ship: false\n")
    trackers = Queue(queue_root).config.trackers
    assert trackers.github == GitHubSettings(api_url="https://ghe.example.com/api/v3",
                                             label="ready", in_progress_label="doing",
                                             close_on_ship=False)
    assert trackers.takeover == 5.0


# --- end to end, through the CLI --------------------------------------------------------------

def use_fake(root: Path, gh: FakeGitHub, extra: str = "") -> None:
    """Point the queue's aq.yaml at the fake (as an Enterprise api_url) and commit it."""
    config = root / "aq.yaml"
    config.write_text(config.read_text() + f"\ntrackers:\n{extra}  github:\n    api_url: {gh.url}\n")
    git(root, "commit", "-qam", "trackers: the fake GitHub")


def ok(ran: Ran) -> Ran:
    assert ran.returncode == 0, f"exit {ran.returncode}\n{ran.stdout}\n{ran.stderr}"
    return ran


def show(aq: Aq, job_id: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(ok(aq("show", job_id, "--json")).stdout)
    return data


def types(job: dict[str, Any]) -> list[str]:
    return [e["type"] for e in job["events"]]


def no_token_in(root: Path, printed: dict[str, str]) -> None:
    hits = scan(root, [TOKEN], extra=printed)
    assert not hits, leaks(hits)


ENV = {"GITHUB_TOKEN": TOKEN}


def test_an_issue_goes_from_import_to_shipped_and_its_issue_follows(
        aq: Aq, queue_root: Path, gh: FakeGitHub) -> None:
    """An issue imported by `aq from-tracker` becomes an inbox job (again: nothing changed; a
    new body: updated), runs with progress labelled and commented on the issue (a new body now
    changes nothing), and `aq ship` closes the issue; afterwards nothing is owed and a
    re-import changes nothing."""
    use_fake(queue_root, gh)
    gh.add_issue(REPO, "Say hi", "echo first", labels=["engine:shell"])
    ref = "github:acme/app#1"
    printed: dict[str, str] = {}

    def run(*args: str) -> Ran:
        ran = aq(*args, env=ENV)
        printed[" ".join(args)] = ran.stdout + ran.stderr
        return ran

    added = ok(run("from-tracker", ref))
    job_id = added.stdout.split("added ")[1].split()[0]
    job = show(aq, job_id)
    assert (job["stage"], job["tracker_item"], job["engine"]) == ("inbox", ref, "shell")
    assert job["body"].strip() == "echo first"
    again = ok(run("from-tracker", ref))
    assert "nothing changed" in again.stdout

    gh.set_issue(REPO, 1, body="echo hi")
    updated = json.loads(ok(run("from-tracker", ref, "--json")).stdout)
    assert updated == [{"ref": ref, "outcome": "updated", "job": job_id, "stage": "inbox",
                        "message": f"{ref} -> updated {job_id} (still in the inbox)"}]
    job = show(aq, job_id)
    assert job["body"].strip() == "echo hi" and "updated_from_tracker" in types(job)

    ok(run("run", "--drain"))
    job = show(aq, job_id)
    assert job["stage"] == "review" and types(job).count("tracker_posted") == 2
    assert "aq:in-progress" in gh.labels(REPO, 1)
    building, review = gh.comments(REPO, 1)
    assert f"aq job `{job_id}`: building, attempt 1, by worker" in building
    assert "now in review" in review and "waiting for a person to ship it" in review
    assert all(MARK_START in c for c in (building, review))
    gh.set_issue(REPO, 1, body="echo something else")
    started = json.loads(ok(run("from-tracker", ref, "--json")).stdout)
    assert started[0]["outcome"] == "started" and started[0]["stage"] == "review"
    assert "--new" in started[0]["message"]
    assert show(aq, job_id)["body"].strip() == "echo hi"

    shipped = ok(run("ship", job_id))
    assert "-> shipped" in shipped.stdout and "owed" not in shipped.stderr
    assert (gh.state(REPO, 1), gh.state_reason(REPO, 1)) == ("closed", "completed")
    assert gh.labels(REPO, 1) == ["engine:shell"]
    assert len(gh.comments(REPO, 1)) == 3 and "shipped by" in gh.comments(REPO, 1)[2]
    assert types(show(aq, job_id)).count("tracker_posted") == 3

    assert "nothing owed to trackers" in ok(run("to-tracker", "--all")).stdout
    later = json.loads(ok(run("from-tracker", ref, "--json")).stdout)
    assert later[0]["outcome"] == "closed" and later[0]["stage"] == "shipped"
    assert "nothing changed" in later[0]["message"]
    assert len(gh.comments(REPO, 1)) == 3
    assert [j["id"] for j in json.loads(ok(aq("ls", "--json")).stdout)] == [job_id]
    no_token_in(queue_root, printed)


def test_a_query_imports_the_labelled_open_issues_only(
        aq: Aq, queue_root: Path, gh: FakeGitHub) -> None:
    """`aq from-tracker --query github:OWNER/REPO --json` imports the open agent:run issues and
    prints one {ref, outcome, job, stage, message} per item; a second look adds nothing."""
    use_fake(queue_root, gh)
    gh.add_issue(REPO, "First task", "echo 1", labels=["agent:run", "priority:high"])
    gh.add_issue(REPO, "Not for agents", "echo 2")
    gh.add_issue(REPO, "Done already", "echo 3", labels=["agent:run"], state="closed")
    gh.add_issue(REPO, "Second task", "echo 4", labels=["agent:run"])
    ran = ok(aq("from-tracker", "--query", f"github:{REPO}", "--json", env=ENV))
    results = json.loads(ran.stdout)
    assert sorted(r["ref"] for r in results) == ["github:acme/app#1", "github:acme/app#4"]
    for r in results:
        assert set(r) == {"ref", "outcome", "job", "stage", "message"}
        assert r["outcome"] == "added" and r["stage"] == "inbox" and r["job"] in r["message"]
    jobs = {j["tracker_item"]: j for j in json.loads(ok(aq("ls", "--json")).stdout)}
    assert set(jobs) == {"github:acme/app#1", "github:acme/app#4"}
    assert jobs["github:acme/app#1"]["priority"] == "high"
    again = json.loads(ok(aq("from-tracker", "--query", f"github:{REPO}", "--json", env=ENV)).stdout)
    assert sorted(r["outcome"] for r in again) == ["unchanged", "unchanged"]


def test_import_failures_exit_refused_and_say_why(aq: Aq, queue_root: Path, gh: FakeGitHub) -> None:
    """A missing issue fails that item only, with the 404 advice, and the command exits 1; a
    malformed reference is a usage error (exit 2) before anything is fetched."""
    use_fake(queue_root, gh)
    gh.add_issue(REPO, "Exists", "echo hi")
    ran = aq("from-tracker", "github:acme/app#1", "github:acme/app#7", env=ENV)
    assert ran.returncode == 1
    assert "added" in ran.stdout and "acme/app#7" in ran.stderr and "404" in ran.stderr
    assert "Traceback" not in ran.stderr
    requests = len(gh.requests)
    bad = aq("from-tracker", "github:acme/app#1", "github:acme", env=ENV)
    assert bad.returncode == 2 and "github:OWNER/REPO#N" in bad.stderr
    assert len(gh.requests) == requests


def test_posts_a_down_tracker_missed_are_sent_later_once_each_in_order(
        aq: Aq, queue_root: Path, gh: FakeGitHub) -> None:
    """GitHub refusing every comment while a linked job runs (rate-limited for an hour): the
    job still reaches review and the worker ends; the posts stay owed (no tracker_posted);
    `aq to-tracker --all` sends each once, oldest first, and a second one sends nothing."""
    use_fake(queue_root, gh, extra="  takeover: 0.2s\n")
    gh.add_issue(REPO, "Say hi", "echo hi", labels=["engine:shell"])
    job_id = json.loads(ok(aq("from-tracker", "github:acme/app#1", "--json", env=ENV)).stdout)[0]["job"]
    # An hour-long limit, not 500s: the worker's adapter would really sleep 1+2+4 s per try.
    gh.fail_next(403, times=1000, method="POST", path=r"/comments$",
                 message="API rate limit exceeded for user ID 1.",
                 headers={"x-ratelimit-remaining": "0",
                          "x-ratelimit-reset": str(int(time.time()) + 3600)})
    ran = ok(aq("run", "--drain", env=ENV, timeout=90))
    said = ran.stdout + ran.stderr
    assert "1 finished" in said and "stays owed" in said and "Traceback" not in said, said
    assert "rate limit" in said
    job = show(aq, job_id)
    assert job["stage"] == "review" and "tracker_posted" not in types(job)
    assert gh.comments(REPO, 1) == []

    with gh._lock:  # GitHub is back (the fake has no public way to drop queued faults)
        gh._faults.clear()
    time.sleep(0.25)  # past trackers.takeover: the worker's posts may be sent by anyone
    sent = json.loads(ok(aq("to-tracker", "--all", "--json", env=ENV)).stdout)
    assert [s["ok"] for s in sent["sent"]] == [True, True] and sent["waiting"] == []
    building, review = gh.comments(REPO, 1)
    assert "building, attempt 1" in building and "now in review" in review
    events = show(aq, job_id)["events"]
    posted = [e for e in events if e["type"] == "tracker_posted"]
    posting = [e for e in events if e["type"] == "tracker_posting"]
    sender = posted[0]["by"]
    # the worker let go of every post it had claimed (how many it reached before it ended
    # depends on the machine's load) and of both as it ended; to-tracker claimed and sent them
    worker_claims = {e["for"] for e in posting if e["by"] != sender and not e.get("released")}
    worker_releases = {e["for"] for e in posting if e["by"] != sender and e.get("released")}
    assert worker_claims <= worker_releases and len(worker_releases) == 2
    assert [e["for"] for e in posting if e["by"] == sender] == [e["for"] for e in posted]
    assert [e["type"] for e in events].count("tracker_posted") == 2
    assert "nothing owed to trackers" in ok(aq("to-tracker", "--all", env=ENV)).stdout
    assert len(gh.comments(REPO, 1)) == 2
    no_token_in(queue_root, {"run": ran.stdout + ran.stderr})


def test_a_failing_jobs_log_tail_reaches_the_issue_without_the_token(
        aq: Aq, queue_root: Path, gh: FakeGitHub) -> None:
    """A linked job that prints GITHUB_TOKEN and fails: its issue gets the log tail with the
    token redacted, and no file, commit or object of the queue holds the token."""
    use_fake(queue_root, gh)
    gh.add_issue(REPO, "Leaky", 'echo "the token is $GITHUB_TOKEN"; exit 3',
                 labels=["engine:shell"])
    ok(aq("from-tracker", "github:acme/app#1", env=ENV))
    ran = aq("run", "--drain", env=ENV)
    failed = gh.comments(REPO, 1)[-1]
    assert "Log tail" in failed and "the token is [REDACTED]" in failed, failed
    assert all(TOKEN not in c for c in gh.comments(REPO, 1))
    no_token_in(queue_root, {"run": ran.stdout + ran.stderr})


def test_a_token_under_a_custom_token_env_is_scrubbed_too(
        aq: Aq, queue_root: Path, gh: FakeGitHub) -> None:
    """trackers.github.token_env names where the token is: whatever its name, a linked job
    printing it leaks it neither to the queue nor to the issue."""
    use_fake(queue_root, gh, extra="")
    config = queue_root / "aq.yaml"
    config.write_text(config.read_text() + "    token_env: GH_CREDENTIAL\n")
    git(queue_root, "commit", "-qam", "token from GH_CREDENTIAL")
    gh.add_issue(REPO, "Leaky", 'echo "the token is $GH_CREDENTIAL"; exit 3',
                 labels=["engine:shell"])
    env = {"GH_CREDENTIAL": TOKEN}
    ok(aq("from-tracker", "github:acme/app#1", env=env))
    ran = aq("run", "--drain", env=env)
    assert gh.comments(REPO, 1), ran.stdout  # the posts went out with that token
    assert all(TOKEN not in c for c in gh.comments(REPO, 1))
    no_token_in(queue_root, {"run": ran.stdout + ran.stderr})
