"""The posting protocol's edges, found in review: a post's key survives a replay, a worker's
clock is its own when it takes a post over, its own posts are renewed before anyone may take
them, a person's move never overrides a live claim, and the GitHub token goes nowhere else."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from aq.core.events import POSTING
from aq.core.lifecycle import Action, Stage
from aq.errors import ConfigError, UsageError
from aq.store.queue import Queue
from aq.trackers.base import Item, Post, Ref, TrackerError, parse_ref
from aq.trackers.github import GitHub
from aq.trackers.settings import GitHubSettings
from aq.usecases.tracker_delivery import post_moves, posts_due
from aq.usecases.tracker_import import import_item
from aq.usecases.tracker_posts import OwedPost, owed_posts, post_key
from aq.worker.courier import Sightings
from tests.helpers.fake_github import FakeGitHub
from tests.helpers.queue import T0, events, write_job
from tests.helpers.trackers import WHO, FakeTracker, configure, env


@pytest.fixture
def tracker(tmp_path: Path) -> FakeTracker:
    return FakeTracker(tmp_path / "tracker")


def log(root: Path, job_id: str, *lines: dict[str, object]) -> None:
    with (root / "queue" / ".events" / f"{job_id}.jsonl").open("a") as out:
        out.writelines(json.dumps(line) + "\n" for line in lines)


CLAIM = {"ts": "2026-01-01T12:01:00.000000Z", "type": "claimed", "by": "w1", "from": "inbox",
         "to": "building", "attempt": 1, "token": "1.w1.aa"}
FINISH = {"ts": "2026-01-01T12:02:00.000000Z", "type": "finished", "by": "w1", "from": "building",
          "to": "review", "attempt": 1, "token": "1.w1.aa", "outcome": "ok", "action": "submit"}


def test_a_replayed_move_keeps_its_post_key() -> None:
    """A worker's move replayed after the remote was away (a new time, `replayed` added) is the
    same move to the tracker: its post is not owed a second time."""
    replayed = {**FINISH, "ts": "2026-01-01T13:00:00.000000Z", "replayed": "2026-01-01T13:00:00Z"}
    assert post_key("j", replayed) == post_key("j", FINISH)
    assert post_key("j", {**CLAIM, "replayed": "x"}) == post_key("j", CLAIM)
    assert post_key("j", FINISH) != post_key("j", CLAIM)
    moved = {"ts": "2026-01-01T12:03:00.000000Z", "type": "moved", "by": WHO, "from": "review",
             "to": "shipped", "action": "ship"}
    later = {**moved, "ts": "2026-01-01T12:09:00.000000Z"}
    assert post_key("j", moved) != post_key("j", later)  # a person's two moves are two posts


def test_a_worker_measures_a_posts_age_on_its_own_clock() -> None:
    """However old a post's time says it is (a clock ten minutes fast), a worker counts from
    when it first saw the post with that holder, on its monotonic clock."""
    clock = [100.0]
    seen = Sightings(lambda: clock[0])
    owed = OwedPost("j", "cmd:fake:1", "k", Post("k", "hi"), "w2", "2000-01-01T00:00:00Z", 0)
    assert seen.age(owed) == 0.0
    clock[0] = 160.0
    assert seen.age(owed) == 60.0
    renewed = OwedPost("j", "cmd:fake:1", "k", Post("k", "hi"), "w2", "2000-01-01T00:05:00Z", 0)
    assert seen.age(renewed) == 0.0  # a renewed claim is a new sighting


def test_a_holder_renews_its_claim_before_anyone_may_take_it(queue: Queue) -> None:
    """A worker sends its own moves' posts while they are young; past half the takeover it
    claims them (a fresh tracker_posting) instead of sending on an old claim someone else may
    be taking over."""
    write_job(queue.root, "j", tracker_item="cmd:fake:1", stage="review")
    log(queue.root, "j", CLAIM, FINISH)
    job = queue.resolve("j")
    own = {"1.w1.aa"}  # the lease token of its claim: its own moves, whatever its name
    young = posts_due(queue, [job], me="w1", run="w1/1/aa", age=lambda o: 10.0, takeover=600,
                      env=env(), own=own)
    old = posts_due(queue, [job], me="w1", run="w1/1/aa", age=lambda o: 301.0, takeover=600,
                    env=env(), own=own)
    assert [len(part) for part in young] == [2, 0, 0]
    assert [len(part) for part in old] == [0, 2, 0]
    other = posts_due(queue, [job], me="w2", run="w2/1/bb", age=lambda o: 301.0, takeover=600,
                      env=env(), own={"1.w2.bb"})
    assert [len(part) for part in other] == [0, 0, 2]  # not yet another's
    namesake = posts_due(queue, [job], me="w1", run="w1/2/dd", age=lambda o: 10.0, takeover=600,
                         env=env(), own={"1.w1.zz"})
    assert [len(part) for part in namesake] == [0, 0, 2]  # same --worker name, other process


def test_a_persons_move_never_overrides_a_live_claim(queue_root: Path, tracker: FakeTracker) -> None:
    """A ship while a worker still holds the job's earlier posts (live): the person's own post
    goes out after a bounded wait; the worker's stay the worker's, untouched."""
    configure(queue_root, tracker)
    queue = Queue(queue_root)
    tracker.add("1", "One")
    write_job(queue_root, "j", tracker_item="cmd:fake:1", stage="testing")
    log(queue_root, "j", CLAIM, {**FINISH, "to": "testing"})
    job = queue.resolve("j")
    now = T0 + timedelta(minutes=3)
    for owed in owed_posts(job, queue.read_events("j")):
        log(queue_root, "j", {"ts": "2026-01-01T12:02:30.000000Z", "type": POSTING, "by": "w1",
                              "run": "w1/7/cc", "for": owed.key, "ref": owed.ref})
    from aq.usecases.moves import record_move

    record_move(queue, "j", Action.SHIP, who=WHO, now=now)
    waited: list[float] = []
    clock = [0.0]

    def sleep(seconds: float) -> None:
        waited.append(seconds)
        clock[0] += seconds

    sent = post_moves(queue, ["j"], me=WHO, now=now, env=env(), wait=3.0,
                      monotonic=lambda: clock[0], sleep=sleep)
    assert [s.ok for s in sent] == [True] and sum(waited) >= 3.0
    assert [verb for verb, _, _ in tracker.said()] == ["status", "comment"]
    held = [o for o in owed_posts(queue.resolve("j"), queue.read_events("j"))]
    assert [(o.owner, o.run) for o in held] == [("w1", "w1/7/cc")] * 2
    assert queue.stage_of("j") is Stage.SHIPPED


def test_a_job_that_ran_and_came_back_is_not_rewritten(queue_root: Path, tracker: FakeTracker) -> None:
    """A job back in the inbox after a failed attempt has started: a changed item leaves it be."""
    configure(queue_root, tracker)
    queue = Queue(queue_root)
    tracker.add("1", "One", "echo one")
    first = import_item(queue, _fetched(queue_root, tracker, "1"), now=T0, who=WHO, entropy=1)
    log(queue_root, first.job_id or "", {**CLAIM, "ts": "2026-01-01T12:05:00.000000Z"},
        {**FINISH, "to": "inbox", "outcome": "engine_failed", "action": "retry",
         "ts": "2026-01-01T12:06:00.000000Z"})
    tracker.add("1", "One", "echo changed")
    again = import_item(queue, _fetched(queue_root, tracker, "1"), now=T0, who=WHO, entropy=2)
    assert again.outcome == "started" and "1 attempt(s)" in again.message
    assert "echo one" in (queue_root / "queue" / "inbox" / f"{first.job_id}.md").read_text()
    assert [e["type"] for e in events(queue_root, first.job_id or "")].count("updated_from_tracker") == 0


def _fetched(root: Path, tracker: FakeTracker, ident: str) -> Item:
    return tracker.adapter(root).fetch(Ref("cmd", ident, "fake"))


def test_github_references_ignore_case() -> None:
    """github:Acme/App#3 and github:acme/app#3 are one item, so one job."""
    assert str(parse_ref("github:Acme/App#3")) == str(parse_ref("github:acme/app#3")) == "github:acme/app#3"


@pytest.mark.parametrize("ref", ["github:../..#1", "github:acme/..#1", "github:./app#1",
                                 "github:acme/.#2", "github:acme#1", "github:acme/app#0"])
def test_a_github_reference_that_is_no_repository_is_refused(ref: str) -> None:
    """`github:../..#1` once passed, and the issue was asked of /repos/../../issues/1 with the
    token: an OWNER or a REPO of `.` or `..` walks the API's paths."""
    with pytest.raises(UsageError, match="is not a GitHub issue"):
        parse_ref(ref)


@pytest.mark.parametrize(("url", "said"), [
    ("http://api.example.com", "plain http"),
    ("https://user:tok@api.example.com", "credentials"),
])
def test_an_api_url_the_token_must_not_go_to_is_refused(url: str, said: str) -> None:
    """trackers.github.api_url must be https (plain http only to this machine) and hold no credentials."""
    from aq.store.config import parse_config

    with pytest.raises(ConfigError, match=said):
        parse_config({"trackers": {"github": {"api_url": url}}})
    parse_config({"trackers": {"github": {"api_url": "http://127.0.0.1:8080"}}})


def test_a_next_page_on_another_host_is_not_followed_with_the_token() -> None:
    """A Link header pointing elsewhere is refused: the token goes to the API's host only."""
    with FakeGitHub() as gh:
        gh.add_issue("acme/app", "One", labels=["agent:run"])
        tracker = GitHub(GitHubSettings(api_url=gh.url), {"GITHUB_TOKEN": gh.token or ""},
                         sleep=lambda s: None)
        pages = tracker._pages("/repos/acme/app/issues/1/comments", {}, "comments")
        next(pages)  # the first page is the API's own
        evil = "https://evil.example.com/steal"
        with pytest.raises(TrackerError, match="not followed"):
            tracker._request("GET", evil, None, "the next page")
        assert all("evil" not in r.path for r in gh.requests)


def test_to_tracker_on_a_job_with_no_item_says_so(queue_root: Path) -> None:
    """`aq to-tracker JOB` for a job no tracker item made is refused in one line, exit 1; a
    move of such a job says nothing of trackers."""
    from tests.conftest import run_aq

    write_job(queue_root, "plain", stage="review")
    ran = run_aq("to-tracker", "plain", cwd=queue_root)
    assert ran.returncode == 1 and ran.stderr.count("\n") == 1
    assert "not linked to a tracker item" in ran.stderr
    shipped = run_aq("ship", "plain", cwd=queue_root)
    assert (shipped.returncode, shipped.stderr) == (0, "")


def test_an_item_done_meanwhile_is_not_put_back_in_progress(queue_root: Path,
                                                            tracker: FakeTracker) -> None:
    """A late 'in progress' (a worker's claim post arriving after the ship's) leaves an item
    that is done as it is: only its comment goes out."""
    tracker.add("5", "Five", status="closed")
    adapter = tracker.adapter(queue_root)
    adapter.post(Ref("cmd", "5", "fake"), Post("k", "building, attempt 1", "in_progress"))
    assert tracker.said() == [("comment", "5", "building, attempt 1")]
    with FakeGitHub() as gh:
        gh.add_issue("acme/app", "Shipped already", state="closed")
        github = GitHub(GitHubSettings(api_url=gh.url), {"GITHUB_TOKEN": gh.token or ""},
                        sleep=lambda s: None)
        github.post(Ref("github", "acme/app#1"), Post("k", "building", "in_progress"))
        assert gh.labels("acme/app", 1) == [] and len(gh.comments("acme/app", 1)) == 1


def test_a_pull_request_already_open_is_found_not_made_twice() -> None:
    """Opening the pull request of a branch that has one open returns that one's page."""
    with FakeGitHub() as gh:
        gh.add_repo("acme/app")
        github = GitHub(GitHubSettings(api_url=gh.url), {"GITHUB_TOKEN": gh.token or ""},
                        sleep=lambda s: None)
        first = github.open_pull_request("acme/app", "aq/x", "main", "X", "Job x")
        again = github.open_pull_request("acme/app", "aq/x", "main", "X", "Job x")
        assert first == again == "https://github.com/acme/app/pull/1"
        assert len(gh.pulls("acme/app")) == 1


def test_a_batch_starts_no_post_after_its_deadline(queue_root: Path, tracker: FakeTracker) -> None:
    """Posts whose turn comes after the deadline are not started (their claims would have grown
    old): they come back not sent, to be tried again."""
    from aq.usecases.tracker_delivery import Trackers, send

    configure(queue_root, tracker)
    tracker.add("1", "One")
    owed = [OwedPost("j", "cmd:fake:1", f"k{n}", Post(f"k{n}", f"post {n}"), "w1", "t", n)
            for n in range(3)]
    clock = iter([0.0, 5.0, 11.0])  # looked at before each post
    sent = send(Trackers(Queue(queue_root), env()), owed, deadline=10.0, monotonic=lambda: next(clock))
    assert [(s.ok, s.retry) for s in sent] == [(True, True), (True, True), (False, True)]
    assert "not sent yet" in sent[2].message and len(tracker.comments()) == 2


def test_only_credentials_refuse_a_whole_tracker() -> None:
    """A bad token refuses every item of GitHub (everywhere); one issue that is not there
    refuses that item only."""
    with FakeGitHub() as gh:
        gh.add_repo("acme/app")
        good = GitHub(GitHubSettings(api_url=gh.url), {"GITHUB_TOKEN": gh.token or ""},
                      sleep=lambda s: None)
        with pytest.raises(TrackerError) as missing:
            good.post(Ref("github", "acme/app#9"), Post("k", "hi"))
        assert not missing.value.everywhere and not missing.value.retry
        bad = GitHub(GitHubSettings(api_url=gh.url), {"GITHUB_TOKEN": "ghp_" + "0" * 36},
                     sleep=lambda s: None)
        with pytest.raises(TrackerError) as refused:
            bad.post(Ref("github", "acme/app#9"), Post("k", "hi"))
        assert refused.value.everywhere and refused.value.status == 401


def test_a_claim_pushed_counts_its_age_from_the_push() -> None:
    """A worker's own renewed claim is young from when it pushed it, not from its next look."""
    clock = [500.0]
    seen = Sightings(lambda: clock[0])
    seen.claimed("k", "2026-01-01T12:10:00.000000Z")
    clock[0] = 800.0
    owed = OwedPost("j", "cmd:fake:1", "k", Post("k", "hi"), "w1", "2026-01-01T12:10:00.000000Z", 0)
    assert seen.age(owed) == 300.0


def test_a_command_trackers_done_word_counts_as_closed(queue_root: Path, tracker: FakeTracker) -> None:
    """An item in the status statuses.done names is done, even when `closed:` does not list it."""
    tracker.add("3", "Three", status="closed-ish")
    adapter = tracker.adapter(queue_root, statuses={"in_progress": "doing", "done": "Closed-ish"})
    assert not adapter.fetch(Ref("cmd", "3", "fake")).open
