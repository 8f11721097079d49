"""The tracker bridge (aq/usecases/tracker_*.py, aq/trackers): items in as jobs, each job's moves back out as
posts, through the command adapter and a stand-in tracker CLI (a real script, real processes)."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from aq.core.events import POSTED, POSTING, UPDATED, iso, moved, parse_iso, tracker_posting
from aq.core.lifecycle import Action
from aq.errors import ConfigError, UsageError
from aq.store.config import parse_config
from aq.store.queue import Queue
from aq.trackers.base import Item, Post, Ref, TrackerError, our_priority, parse_ref
from aq.trackers.settings import DONE, IN_PROGRESS, CommandSettings, parse_settings
from aq.usecases.jobs import add_job
from aq.usecases.moves import move_job, record_move
from aq.usecases.tracker_delivery import Sent, posts_due, record_sent, to_tracker
from aq.usecases.tracker_import import (
    import_item,
    import_query,
    import_refs,
    job_fields,
    linked_job,
    watch_imports,
)
from aq.usecases.tracker_posts import compose, owed_posts, post_key
from tests.helpers.cli import Ran, aq_env, run_aq
from tests.helpers.git import git
from tests.helpers.processes import alive, ctrl_c_as_a_terminal_sends_it
from tests.helpers.queue import T0, events, make_queue, write_job
from tests.helpers.trackers import WHO, FakeTracker, configure, env
from tests.helpers.waiting import wait_until

Aq = Callable[..., Ran]
SECRET = "supersecretvalue123"  # in MY_API_TOKEN: a name that says it is a secret
TRACKER_AUTH = "trackerpass-42xyz"  # in FAKE_TRACKER_AUTH: secret only because secret_env says so


def commits(root: Path) -> int:
    return int(git(root, "rev-list", "--count", "HEAD"))


def imports(queue: Queue, *refs: str, new: bool = False, now: datetime = T0) -> list[Any]:
    return import_refs(queue, list(refs), now=now, who=WHO, entropy=itertools.count(1).__next__,
                       new=new, env=env())


def job_of(queue: Queue, ref: str) -> Any:
    job = linked_job(queue.snapshot(), ref)
    assert job is not None, f"no job linked to {ref}"
    return job


@pytest.fixture
def tracker(tmp_path: Path) -> FakeTracker:
    return FakeTracker(tmp_path / "tracker")


@pytest.fixture
def linked(queue_root: Path, tracker: FakeTracker) -> Queue:
    """The fixture queue with the fake tracker in its aq.yaml."""
    configure(queue_root, tracker)
    return Queue(queue_root)


# --- references and settings ------------------------------------------------------------------

def test_parse_ref_reads_each_kind_of_reference() -> None:
    """github:O/R#N, backlog:TASK-N (upper-cased) and cmd:NAME:ID parse and print back the same."""
    assert parse_ref("github:o/r#12") == Ref("github", "o/r#12")
    assert parse_ref(" backlog:task-3 ") == Ref("backlog", "TASK-3")
    assert parse_ref("backlog:task-3.1") == Ref("backlog", "TASK-3.1")
    assert parse_ref("cmd:jira:PROJ-7") == Ref("cmd", "PROJ-7", "jira")
    assert parse_ref("cmd:jira:a:b") == Ref("cmd", "a:b", "jira")
    for text in ("github:o/r#12", "backlog:TASK-3", "cmd:jira:PROJ-7"):
        assert str(parse_ref(text)) == text


@pytest.mark.parametrize(("text", "expected"), [
    ("", "expected github:OWNER/REPO#N, backlog:TASK-N or cmd:NAME:ID"),
    ("PROJ-7", "expected github:OWNER/REPO#N, backlog:TASK-N or cmd:NAME:ID"),
    ("jira:PROJ-7", "expected github:OWNER/REPO#N, backlog:TASK-N or cmd:NAME:ID"),
    ("github:o/r", "expected github:OWNER/REPO#N"),
    ("github:o/r#0", "expected github:OWNER/REPO#N"),
    ("github:o#1", "expected github:OWNER/REPO#N"),
    ("backlog:3", "expected backlog:TASK-N"),
    ("cmd:jira", "expected cmd:NAME:ID"),
    ("cmd:jira:", "expected cmd:NAME:ID"),
    ("cmd:ji ra:1", "expected cmd:NAME:ID"),
    ("cmd:jira:a b", "expected cmd:NAME:ID"),
    ("cmd:jira:--output=/etc/x", "starts with '-', which the tracker's command would read as an option"),
])
def test_parse_ref_refuses_a_bad_reference_saying_what_a_good_one_is(text: str, expected: str) -> None:
    """A bad reference is a usage error quoting it and showing the shape expected, on one line."""
    with pytest.raises(UsageError) as caught:
        parse_ref(text)
    message = str(caught.value)
    assert message.startswith(f"{text!r} is not a")
    assert expected in message and "\n" not in message


def test_settings_parse_templates_tables_and_durations(tracker: FakeTracker) -> None:
    """A template string splits like a shell would (a list is kept); timeout and takeover read as durations."""
    settings = parse_settings({"takeover": "90s", "cmd": {"fake": tracker.settings(
        view=["my tracker", "view", "{id}"], closed=["Won't Do"], timeout="1m",
        priorities={"Sev-1": "critical"})}}, "aq.yaml")
    spec = settings.commands["fake"]
    assert isinstance(spec, CommandSettings)
    assert spec.view == ("my tracker", "view", "{id}")
    assert spec.comment == (sys.executable, str(tracker.script), str(tracker.home), "comment",
                            "{id}", "{text}")
    assert spec.closed == ("won't do",) and spec.timeout == 60.0 and settings.takeover == 90.0
    assert dict(spec.statuses) == {"in_progress": "doing", "done": "closed"}
    assert spec.secret_env == ("FAKE_TRACKER_AUTH",)
    assert parse_settings(None, "aq.yaml").commands == {}


@pytest.mark.parametrize(("raw", "names"), [
    ({"jira": {}}, "trackers: unknown key 'jira'"),
    ({"cmd": {"x": {"query": "t list"}}}, "trackers.cmd.x: needs 'view'"),
    ({"cmd": {"x": {"view": "t {id}", "priorities": {"Blocker": "urgent"}}}},
     "trackers.cmd.x.priorities: Blocker: 'urgent' is not a priority"),
    ({"cmd": {"x": {"view": "t {id}", "statuses": {"started": "doing"}}}},
     "trackers.cmd.x.statuses: unknown key 'started'"),
    ({"cmd": {"x": {"view": "t {id}", "fields": {"summary": "a.b"}}}},
     "trackers.cmd.x.fields: unknown key 'summary'"),
    ({"cmd": {"x": {"view": "t {id}", "colour": "red"}}}, "trackers.cmd.x: unknown key 'colour'"),
    ({"cmd": {"x y": {"view": "t {id}"}}}, "trackers.cmd: 'x y' is not a name"),
    ({"github": {"token_env": "MY-TOKEN"}}, "trackers.github.token_env: 'MY-TOKEN' is not"),
])
def test_settings_errors_name_the_key(raw: dict[str, Any], names: str) -> None:
    """A bad `trackers:` table is refused naming the key at fault; aq.yaml's loader adds the file."""
    with pytest.raises(ValueError, match="^" + re.escape(names)):
        parse_settings(raw, "aq.yaml")
    with pytest.raises(ConfigError, match=r"^aq\.yaml: "):
        parse_config({"trackers": raw})


@pytest.mark.parametrize(("raw", "names"), [
    ({"cmd": {"x": {"view": "t {id}", "secret_env": ["MY-TOKEN"]}}}, "trackers.cmd.x.secret_env"),
    ({"cmd": {"x": {"view": "t {id}", "timeout": "soon"}}}, "trackers.cmd.x.timeout"),
    ({"cmd": {"x": {"view": ""}}}, "trackers.cmd.x.view"),
    ({"takeover": "soon"}, "trackers.takeover"),
])
def test_settings_errors_in_a_command_tracker_name_the_key(raw: dict[str, Any], names: str) -> None:
    """A bad secret_env name, timeout, command or takeover is refused naming its key too."""
    with pytest.raises(ValueError) as caught:
        parse_settings(raw, "aq.yaml")
    assert str(caught.value).startswith(f"{names}:"), caught.value


# --- items in: job_fields and import -----------------------------------------------------------

def test_labels_set_profile_priority_capabilities_engine_and_lock() -> None:
    """Labels `key:value` set manifest keys (several cap: make capabilities); other labels are ignored."""
    item = Item(Ref("cmd", "7", "fake"), "  Fix   the\nlogin ", "body", labels=(
        "profile:reviewer", "Priority:High", "cap:gpu", "cap:os:linux", "cap:gpu", "engine:shell",
        "lock:db", "bug", "size:", "triage"), priority="low")
    assert job_fields(item) == {
        "title": "Fix the login", "profile": "reviewer", "priority": "high",
        "engine": "shell", "lock": "db", "capabilities": ["gpu", "os:linux"],
        "tracker-item": "cmd:fake:7"}
    plain = Item(Ref("github", "o/r#3"), "", "body", priority="critical")
    assert job_fields(plain) == {"title": "github:o/r#3", "priority": "critical",
                                 "tracker-item": "github:o/r#3"}


def test_an_item_imports_as_a_job_carrying_its_title_body_labels_and_reference(
        linked: Queue, tracker: FakeTracker) -> None:
    """Importing an item adds one inbox job whose manifest holds what the item's labels say."""
    ref = tracker.add("7", "Fix the login", "Make the login work.\n\nSee the logs.",
                      labels=("cap:gpu", "cap:os:linux", "priority:high", "lock:db", "engine:shell",
                              "profile:reviewer"))
    before = commits(linked.root)
    [result] = imports(linked, ref)
    assert (result.outcome, result.ref, result.stage) == ("added", ref, "inbox")
    assert result.message == f"{ref} -> added {result.job_id}"
    job = job_of(linked, ref)
    assert job.id == result.job_id and job.stage == "inbox" and job.id.startswith("fix-the-login-")
    m = job.manifest
    assert (m.title, m.body.strip(), m.tracker_item) == ("Fix the login",
                                                         "Make the login work.\n\nSee the logs.", ref)
    assert (m.priority, m.lock, m.engine, m.profile) == ("high", "db", "shell", "reviewer")
    assert m.capabilities == ("gpu", "os:linux")
    [added] = events(linked.root, job.id)
    assert (added["type"], added["by"], added["tracker_item"]) == ("added", WHO, ref)
    assert commits(linked.root) == before + 1
    assert git(linked.root, "status", "--porcelain", "queue") == ""


def test_an_item_with_an_empty_body_uses_its_title(linked: Queue, tracker: FakeTracker) -> None:
    """No body: the title is the job's body too (a job needs a body)."""
    ref = tracker.add("8", "echo from the title", "  \r\n ")
    [result] = imports(linked, ref)
    assert result.outcome == "added"
    assert job_of(linked, ref).manifest.body.strip() == "echo from the title"


def test_the_trackers_own_priority_maps_to_ours(queue_root: Path, tracker: FakeTracker) -> None:
    """A tracker's priority reads through aq.yaml's `priorities:` first, then common words; a label wins."""
    adapter = tracker.adapter(queue_root, priorities={"Sev-2": "high", "Highest": "low"})
    cases = {"Sev-2": "high", "sev-2": "high", "Highest": "low", "Blocker": "critical",
             "P1": "high", "p0": "critical", "Trivial": "low", "Normal": "medium", "whenever": None}
    for n, (theirs, ours) in enumerate(cases.items()):
        tracker.add(str(n), "t", "b", priority={"name": theirs} if n % 2 else theirs)
        assert adapter.fetch(Ref("cmd", str(n), "fake")).priority == ours, theirs
    assert our_priority("Highest") == "critical" and our_priority("") is None
    tracker.add("99", "t", "b", labels=("priority:low",), priority="P0")
    item = adapter.fetch(Ref("cmd", "99", "fake"))
    assert item.priority == "critical" and job_fields(item)["priority"] == "low"


def test_a_bad_label_fails_that_item_only(linked: Queue, tracker: FakeTracker) -> None:
    """priority:whenever fails its own import with a line naming the item; the query's others import."""
    tracker.add("1", "first", "echo 1")
    tracker.add("2", "second", "echo 2", labels=("priority:whenever",))
    tracker.add("3", "third", "echo 3")
    results = import_query(linked, "cmd:fake", label=None, now=T0, who=WHO,
                           entropy=itertools.count(1).__next__, new=False, env=env())
    assert [(r.ref, r.outcome) for r in results] == [
        ("cmd:fake:1", "added"), ("cmd:fake:2", "failed"), ("cmd:fake:3", "added")]
    failed = results[1]
    assert failed.failed and failed.job_id is None
    assert failed.message.startswith("cmd:fake:2: ") and "\n" not in failed.message
    assert failed.message.count("cmd:fake:2") == 1
    assert "priority" in failed.message and "whenever" in failed.message
    assert sorted(job.manifest.tracker_item for job in linked.snapshot().jobs) == [
        "cmd:fake:1", "cmd:fake:3"]


@pytest.mark.parametrize(("labels", "body", "said"), [
    # once made jobs aq add refuses: run at last, they failed engine_missing or waited for ever
    (("engine:nosuch",), "echo", "key 'engine': engine 'nosuch' is not defined"),
    (("profile:nosuch",), "echo", "key 'profile': profile 'nosuch' does not exist"),
    (("cap:a b",), "echo", "key 'capabilities': capability 'a b': holds a space"),
])
def test_an_item_whose_labels_name_what_add_refuses_fails_alone(
        linked: Queue, tracker: FakeTracker, labels: tuple[str, ...], body: str, said: str) -> None:
    ref = tracker.add("1", "first", body, labels=labels)
    [result] = imports(linked, ref)
    assert result.failed and result.message.startswith(f"{ref}: {said}"), result.message
    assert result.message.endswith("(from the item's labels: fix them in the tracker)")
    assert not linked.snapshot().jobs


def test_an_item_whose_body_cannot_be_a_job_is_not_blamed_on_its_labels(
        linked: Queue, tracker: FakeTracker) -> None:
    ref = tracker.add("1", "first", "a\0b")
    [result] = imports(linked, ref)
    assert result.failed and result.message == (
        f"{ref}: looks binary (it holds NUL bytes): a job is a Markdown text file (from the item: "
        "fix it in the tracker)")


# --- importing again ----------------------------------------------------------------------------

def test_the_same_content_again_changes_nothing(linked: Queue, tracker: FakeTracker) -> None:
    """A second import of an unchanged item says 'unchanged' and makes no commit."""
    ref = tracker.add("7", "Fix the login", "echo fix")
    [first] = imports(linked, ref)
    before = commits(linked.root)
    text = (linked.root / "queue" / "inbox" / f"{first.job_id}.md").read_text()
    [again] = imports(linked, ref, now=T0 + timedelta(hours=1))
    assert (again.outcome, again.job_id, again.stage) == ("unchanged", first.job_id, "inbox")
    assert "imported already with this content: nothing changed" in again.message
    assert commits(linked.root) == before
    assert (linked.root / "queue" / "inbox" / f"{first.job_id}.md").read_text() == text
    assert len(events(linked.root, first.job_id)) == 1


def test_a_changed_item_updates_its_waiting_job_and_leaves_a_started_one(
        linked: Queue, tracker: FakeTracker, aq: Aq) -> None:
    """Changed while in the inbox: the job is rewritten; once claimed, nothing changes unless --new."""
    ref = tracker.add("7", "Fix the login", "echo one")
    [first] = imports(linked, ref)
    path = linked.root / "queue" / "inbox" / f"{first.job_id}.md"
    old_hash = job_of(linked, ref).manifest.content_hash

    tracker.add("7", "Fix the login", "echo two", labels=("priority:high",))
    before = commits(linked.root)
    [updated] = imports(linked, ref, now=T0 + timedelta(minutes=1))
    assert (updated.outcome, updated.job_id, updated.stage) == ("updated", first.job_id, "inbox")
    assert "echo two" in path.read_text() and "priority: high" in path.read_text()
    assert commits(linked.root) == before + 1
    [update] = events(linked.root, first.job_id, UPDATED)
    assert (update["by"], update["tracker_item"], update["from_hash"]) == (WHO, ref, old_hash[:12])

    ran = aq("run", "--once", "--worker", "w1")
    assert ran.returncode == 0, ran.stderr
    assert job_of(linked, ref).stage == "review"
    tracker.add("7", "Fix the login", "echo three")
    before = commits(linked.root)
    [started] = imports(linked, ref, now=T0 + timedelta(minutes=2))
    assert (started.outcome, started.job_id, started.stage) == ("started", first.job_id, "review")
    assert "pass --new" in started.message
    assert commits(linked.root) == before
    assert "echo two" in (linked.root / "queue" / "review" / f"{first.job_id}.md").read_text()

    [second] = imports(linked, ref, new=True, now=T0 + timedelta(minutes=3))
    assert second.outcome == "added" and second.job_id != first.job_id
    assert job_of(linked, ref).id == second.job_id  # the newest job made from the item
    [added] = events(linked.root, second.job_id, "added")
    assert added["also"] == first.job_id
    assert "echo three" in job_of(linked, ref).manifest.body


def test_a_closed_item_imports_nothing_and_reports_its_job(linked: Queue, tracker: FakeTracker) -> None:
    """A closed item makes no job; one that made a job before reports where that job is."""
    ref = tracker.add("5", "Old idea", "echo old", status="Resolved")
    before = commits(linked.root)
    [closed] = imports(linked, ref)
    assert (closed.outcome, closed.job_id) == ("closed", None)
    assert closed.message == f"{ref} is Resolved in the tracker: nothing imported (pass --new to import it anyway)"
    assert commits(linked.root) == before and linked.snapshot().jobs == ()

    ref = tracker.add("6", "Newer idea", "echo new")
    [added] = imports(linked, ref)
    tracker.add("6", "Newer idea", "echo newer", status="closed")
    [closed] = imports(linked, ref)
    assert (closed.outcome, closed.job_id, closed.stage) == ("closed", added.job_id, "inbox")
    assert f"its job {added.job_id} is in inbox: nothing changed" in closed.message
    assert job_of(linked, ref).manifest.body.strip() == "echo new"

    item = Item(Ref("cmd", "5", "fake"), "Old idea", "echo old", status="Resolved", open=False)
    anyway = import_item(linked, item, now=T0, who=WHO, entropy=5, new=True)
    assert (anyway.outcome, anyway.stage) == ("added", "inbox")
    assert job_of(linked, "cmd:fake:5").id == anyway.job_id


def test_names_are_checked_only_for_a_job_to_be_made(linked: Queue, tracker: FakeTracker) -> None:
    """A closed item is reported as closed whatever its labels name (the check of engine and
    profile, made before it was known to be closed, failed it with exit 1)."""
    closed = tracker.add("5", "Old idea", "echo old", labels=("engine:nosuch",), status="Resolved")
    [result] = imports(linked, closed)
    assert result.outcome == "closed", result.message


# --- posts owed -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def worked_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three linked jobs run by worker w1 while the tracker was down: A passes verify (testing), B
    fails printing a secret the worker did not know of, C fails twice (inbox, then dead_letter)."""
    base = tmp_path_factory.mktemp("worked")
    with pytest.MonkeyPatch.context() as patch:
        root = make_queue(base / "q", patch)
        tracker = FakeTracker(base / "tracker")
        configure(root, tracker)
        queue, now = Queue(root), datetime.now(UTC)
        jobs = {"job-a": ("echo building A", {"verify": "true"}),
                "job-b": (f"echo 'step one'\necho 'leaked {SECRET} and {TRACKER_AUTH}'\nexit 3", {}),
                "job-c": ("echo flaky; exit 1", {"retry": {"max": 1, "backoff": "0s"}})}
        for n, (job_id, (body, extra)) in enumerate(jobs.items(), 1):
            add_job(queue, body, {"title": job_id, "tracker-item": f"cmd:fake:{n}", **extra},
                    job_id=job_id, now=now, who=WHO, entropy=n)
        tracker.fail()
        ran = run_aq("run", "--drain", "--worker", "w1", cwd=root)
    assert ran.returncode == 0, ran.stderr
    assert tracker.posts() == []
    return root


@pytest.fixture
def worked(queue_root: Path, worked_once: Path) -> Queue:
    """A copy of that queue, for one test to change."""
    shutil.rmtree(queue_root)
    shutil.copytree(worked_once, queue_root, symlinks=True)
    return Queue(queue_root)


def test_each_move_of_a_linked_job_owes_one_post(worked: Queue) -> None:
    """Claim, finish and failure each owe their item a comment, quoting a log tail scrubbed of secrets."""
    snapshot = worked.snapshot().by_id()
    a, b, c = (snapshot[f"job-{name}"] for name in "abc")
    assert (a.stage, b.stage, c.stage) == ("testing", "failed", "dead_letter")

    evs = worked.read_events(a.id)
    claim = next(e for e in evs if e["type"] == "claimed")
    post = compose(a, claim)
    assert post.comment == f"aq job `{a.id}`: building, attempt 1, by worker `w1`."
    assert post.status == IN_PROGRESS
    owed = owed_posts(a, evs)
    assert [o.post.comment for o in owed] == [
        post.comment,
        f"aq job `{a.id}`: attempt 1 finished; verify passed; now in testing, ready to ship."]
    # w1 could not send them and let them go when it ended: anyone's to send at once
    assert [(o.owner, o.free, o.ref, o.job_id) for o in owed] == [("", True, "cmd:fake:1", a.id)] * 2
    assert owed[0].order < owed[1].order

    failed = owed_posts(b, worked.read_events(b.id))[-1].post
    assert failed.status is None
    assert failed.comment.startswith(f"aq job `{b.id}`: attempt 1 failed (engine_failed): ")
    assert "now in failed, left for a person.\n\nLog tail (attempt 1):\n```\n" in failed.comment
    assert "step one" in failed.comment and failed.comment.endswith("\n```")

    retried, dead = (o.post.comment for o in owed_posts(c, worked.read_events(c.id))[1::2])
    assert "attempt 1 did not finish (engine_failed): " in retried and "back in the inbox." in retried
    assert "attempt 2 failed (engine_failed): " in dead and "now in dead_letter" in dead
    assert "flaky" in dead

    # a secret the worker did not know of, but the sender's environment holds, is blanked
    assert SECRET in events(worked.root, b.id, "finished")[0]["tail"]
    mine, stale, waiting = posts_due(worked, [b], me="w1", run="w1",
                                     age=lambda o: 0.0, takeover=600, env=env(MY_API_TOKEN=SECRET))
    assert mine == [] and waiting == []  # let go by w1 when it ended: claimed first
    mine = stale
    assert SECRET not in mine[-1].post.comment and "leaked [REDACTED]" in mine[-1].post.comment


def test_posts_wait_for_their_mover_carry_the_last_status_and_settle_once(
        worked: Queue) -> None:
    """A post another run holds waits for takeover (its age as the caller measures it), then
    is claimed; sent late, posts carry no status but the last move's; a tracker_posted event
    settles a post once."""
    job = worked.resolve("job-a")
    moved = parse_iso(events(worked.root, job.id, "finished")[-1]["ts"])
    for owed in owed_posts(job, worked.read_events(job.id)):  # w2 holds both, live
        worked.transact(lambda tx, key=owed.key: tx.append_event(job.id, {
            "ts": iso(moved), "type": POSTING, "by": "w2", "run": "w2/1/ab", "for": key,
            "ref": "cmd:fake:1"}), "w2 claims")
    mine, stale, waiting = posts_due(worked, [job], me=WHO, run="other-run", age=lambda o: 10.0,
                                     takeover=60, env=env())
    assert (len(mine), len(stale), len(waiting)) == (0, 0, 2)
    assert [w.owner for w in waiting] == ["w2", "w2"]
    mine, stale, waiting = posts_due(worked, [job], me=WHO, run="other-run", age=lambda o: 61.0,
                                     takeover=60, env=env())
    assert (len(mine), len(stale), len(waiting)) == (0, 2, 0)
    mine, stale, waiting = posts_due(worked, [job], me="w2", run="w2/1/ab", age=lambda o: 10.0,
                                     takeover=60, env=env())
    assert (len(mine), len(stale), len(waiting)) == (2, 0, 0)  # its holder sends them
    report = to_tracker(worked, [job.id], me=WHO, now=moved, env=env())
    assert report.sent == () and [w.owner for w in report.waiting] == ["w2", "w2"]

    record_move(worked, job.id, Action.SHIP, who=WHO, now=datetime.now(UTC))
    evs = worked.read_events(job.id)
    owed = owed_posts(job, evs)
    assert [o.post.status for o in owed] == [None, None, DONE]
    assert owed[-1].post.comment == (f"aq job `{job.id}`: shipped by {WHO}. Attempt 1: "
                                     "verify passed.")
    assert owed[-1].owner == WHO

    moves = [e for e in evs if e["type"] in ("claimed", "finished", "moved")]
    keys = [post_key(job.id, e) for e in moves]
    assert [o.key for o in owed] == keys and len(set(keys)) == 3
    assert keys == [post_key(job.id, json.loads(json.dumps(e))) for e in moves]  # as read elsewhere
    assert post_key("another-job", moves[0]) != keys[0]

    sent = Sent(job.id, "cmd:fake:1", keys[0], True, "sent")
    for _ in range(2):
        record_sent(worked, [sent, Sent(job.id, "cmd:fake:1", keys[1], False, "down")], who=WHO,
                    now=datetime.now(UTC))
    assert [e["for"] for e in events(worked.root, job.id, POSTED)] == [keys[0]]
    assert [o.key for o in owed_posts(job, worked.read_events(job.id))] == keys[1:]


def test_a_late_claim_post_still_sets_in_progress(worked: Queue) -> None:
    """Claimed, then finished, both posts owed: the item still reads in progress (no later move says otherwise)."""
    job = worked.resolve("job-a")
    assert IN_PROGRESS in [o.post.status for o in owed_posts(job, worked.read_events(job.id))]


def test_a_log_tail_in_a_post_is_scrubbed_of_the_trackers_own_credential(worked: Queue) -> None:
    """The credential a tracker's secret_env names is no more posted than any *TOKEN*, whatever its name."""
    job = worked.resolve("job-b")
    mine, _, _ = posts_due(worked, [job], me="w1", run="w1", age=lambda o: 0.0,
                           takeover=600, env=env(FAKE_TRACKER_AUTH=TRACKER_AUTH))
    mine = mine or posts_due(worked, [job], me="w1", run="w1", age=lambda o: 0.0, takeover=600,
                             env=env(FAKE_TRACKER_AUTH=TRACKER_AUTH))[1]  # let go: to claim
    assert TRACKER_AUTH not in mine[-1].post.comment


# --- the command adapter -------------------------------------------------------------------------

def test_fields_are_read_at_the_dotted_paths_aq_yaml_names(queue_root: Path, tracker: FakeTracker) -> None:
    """trackers.cmd.NAME.fields maps each field to a dotted path in the tracker's JSON."""
    adapter = tracker.adapter(queue_root, closed=["Won't Do"], fields={
        "title": "fields.summary", "body": "fields.text.plain", "labels": "meta.tags",
        "priority": "fields.sev", "status": "fields.state", "url": "links.web"})
    tracker.put("PROJ-7", {"key": "PROJ-7", "title": "not this one", "fields": {
        "summary": "Fix login", "text": {"plain": "Line one\r\nline two\n"}, "sev": {"name": "P1"},
        "state": {"name": "In Progress"}}, "meta": {"tags": [{"name": "cap:gpu"}, "bug"]},
        "links": {"web": "https://tracker.example/PROJ-7"}})
    item = adapter.fetch(Ref("cmd", "PROJ-7", "fake"))
    assert item == Item(Ref("cmd", "PROJ-7", "fake"), "Fix login", "Line one\nline two",
                        ("cap:gpu", "bug"), "high", "In Progress", True,
                        "https://tracker.example/PROJ-7")
    tracker.put("PROJ-8", {"fields": {"summary": "Nope", "state": "won't do"},
                           "meta": {"tags": "a, b ,,c"}})
    item = adapter.fetch(Ref("cmd", "PROJ-8", "fake"))
    assert (item.open, item.labels, item.body, item.url) == (False, ("a", "b", "c"), "", None)


@pytest.mark.parametrize(("field", "value", "shown"), [
    ("labels", 5, "5"), ("labels", True, "true"), ("labels", {"a": 1}, '{"a": 1}'),
    ("labels", [None, "bug"], '[null, "bug"]'), ("labels", [{"id": 3}], '[{"id": 3}]'),
    ("title", {"a": 1}, '{"a": 1}'), ("body", ["x"], '["x"]')])
def test_an_item_field_of_the_wrong_kind_is_a_tracker_error_not_an_internal_one(
        queue_root: Path, tracker: FakeTracker, field: str, value: object, shown: str) -> None:
    """`"labels": 5` from a tracker's command was an internal error (an int iterated), and a
    title given as an object became the title "{'a': 1}"."""
    adapter = tracker.adapter(queue_root)
    tracker.put("9", {"id": "9", "title": "t", "body": "b", field: value})
    with pytest.raises(TrackerError) as caught:
        adapter.fetch(Ref("cmd", "9", "fake"))
    shape = "a list of names, or names with commas between" if field == "labels" else "text"
    assert str(caught.value) == (
        f"cmd:fake: item 9's {field!r} is {shown}, not text: make the command print {shape}")


@pytest.mark.parametrize("none", [None, False, [], {}, ""])
def test_labels_that_are_empty_or_false_are_no_labels(
        queue_root: Path, tracker: FakeTracker, none: object) -> None:
    tracker.put("9", {"id": "9", "title": "t", "body": "b", "labels": none})
    assert tracker.adapter(queue_root).fetch(Ref("cmd", "9", "fake")).labels == ()


def test_a_query_item_whose_id_would_be_read_as_an_option_fails_the_query(
        queue_root: Path, tracker: FakeTracker) -> None:
    """A person's cmd:NAME:-x was refused, but the same id printed by the query was fetched
    (its view command got '--dash' as an option) and its posts could never be sent."""
    tracker.add("--dash", "dashed", "echo d")
    with pytest.raises(TrackerError, match="the query printed an item aq cannot take: "
                                           "'cmd:fake:--dash' is not an item id"):
        tracker.adapter(queue_root).query("all", None)


def test_the_text_is_one_argument_never_seen_by_a_shell(queue_root: Path, tracker: FakeTracker) -> None:
    """Quotes, newlines, $(...) and placeholders in a comment reach the tracker as one argument, unchanged."""
    text = "it's \"done\"\nsecond line $(touch pwned) `touch pwned2` $HOME {id} {status} {text}"
    tracker.add("7", "Seven")  # (viewed first: an item done meanwhile is not put in progress)
    adapter = tracker.adapter(queue_root)
    assert adapter.post(Ref("cmd", "7", "fake"), Post("k1", text, IN_PROGRESS)) is None
    status, comment = tracker.posts()
    assert (status["verb"], status["id"], status["text"]) == ("status", "7", "doing")
    assert comment["argv"] == [str(tracker.home), "comment", "7", text]
    assert comment["stdin"] == text
    assert not (queue_root / "pwned").exists() and not (queue_root / "pwned2").exists()
    adapter.post(Ref("cmd", "8", "fake"), Post("k2", "no status change"))
    assert tracker.said()[2:] == [("comment", "8", "no status change")]


def test_a_failing_command_is_a_tracker_error_with_its_last_line_scrubbed(
        queue_root: Path, tracker: FakeTracker) -> None:
    """Exit 1: TrackerError quoting the command's last stderr line, the secret_env value blanked."""
    adapter = tracker.adapter(queue_root, env={"FAKE_TRACKER_AUTH": TRACKER_AUTH})
    tracker.fail()
    for call in (lambda: adapter.fetch(Ref("cmd", "7", "fake")),
                 lambda: adapter.post(Ref("cmd", "7", "fake"), Post("k", "hi", DONE))):
        with pytest.raises(TrackerError) as caught:
            call()
        message = str(caught.value)
        assert message.startswith(f"cmd:fake: {sys.executable} failed for ")
        assert message.endswith(": fake: 503 from the server (auth [REDACTED])")
        assert TRACKER_AUTH not in message and caught.value.retry  # down or refused: unknown
    tracker.fail(False)
    with pytest.raises(TrackerError, match=r"failed for item 404: fake: no item 404$"):
        adapter.fetch(Ref("cmd", "404", "fake"))
    (tracker.home / "items" / "bad.json").write_text("<html>oops</html>")
    with pytest.raises(TrackerError, match="printed no JSON"):
        adapter.fetch(Ref("cmd", "bad", "fake"))


def test_a_long_error_line_leaks_no_part_of_a_secret(queue_root: Path, tracker: FakeTracker) -> None:
    """A credential the 300-character limit of the quoted line would cut leaks not even its first half."""
    adapter = tracker.adapter(queue_root, env={"FAKE_TRACKER_AUTH": TRACKER_AUTH})
    tracker.fail(saying="x" * 260)  # the credential starts at character 293 of the line
    with pytest.raises(TrackerError) as caught:
        adapter.fetch(Ref("cmd", "7", "fake"))
    assert TRACKER_AUTH[:8] not in str(caught.value)


def test_a_hanging_command_is_stopped_at_its_timeout(queue_root: Path, tracker: FakeTracker) -> None:
    """A command with no answer in `timeout` is stopped, with its children; the error says to retry."""
    adapter = tracker.adapter(queue_root, timeout="1s")
    (tracker.home / "HANG").touch()
    with pytest.raises(TrackerError) as caught:
        adapter.post(Ref("cmd", "7", "fake"), Post("k", "hi"))
    assert caught.value.retry
    assert "no answer in 1s; stopped" in str(caught.value)
    hung = int((tracker.home / "hung.pid").read_text())
    assert wait_until(lambda: not alive(hung), within=10)
    assert tracker.posts() == []


# --- the command line ---------------------------------------------------------------------------

def test_cli_usage_errors_exit_2_on_one_line(linked: Queue, aq: Aq) -> None:
    """No items, a bad reference, or to-tracker without JOB or --all: exit 2 and one line."""
    for args, says in [(("from-tracker",), "name tracker items"),
                       (("from-tracker", "cmd:fake:1", "jira:2"), "'jira:2' is not a tracker item"),
                       (("to-tracker",), "name jobs, or give --all"),
                       (("to-tracker", "some-job", "--all"), "name jobs or give --all, not both")]:
        ran = aq(*args)
        assert ran.returncode == 2, (args, ran.stderr)
        assert says in ran.stderr and len(ran.stderr.strip().splitlines()) == 1, ran.stderr
        assert "Traceback" not in ran.stderr
    assert linked.snapshot().jobs == ()


def test_cli_from_tracker_reports_each_item_and_fails_when_one_does(
        linked: Queue, tracker: FakeTracker, aq: Aq) -> None:
    """An unknown adapter or a bad label: exit 1 naming the item; the others import; --json shapes it."""
    ran = aq("from-tracker", "cmd:nope:1")
    assert ran.returncode == 1
    assert "no command tracker 'nope' in aq.yaml (trackers.cmd has: fake)" in ran.stderr

    tracker.add("1", "first", "echo 1")
    tracker.add("2", "second", "echo 2", labels=("priority:whenever",))
    ran = aq("from-tracker", "cmd:fake:1", "cmd:fake:2")
    assert ran.returncode == 1
    assert ran.stdout.startswith("cmd:fake:1 -> added first-")
    [line] = ran.stderr.strip().splitlines()
    assert line.startswith("aq: cmd:fake:2: ") and "whenever" in line

    ran = aq("from-tracker", "--json", "cmd:fake:1")
    assert ran.returncode == 0, ran.stderr
    [row] = json.loads(ran.stdout)
    job = job_of(linked, "cmd:fake:1")
    assert row == {"ref": "cmd:fake:1", "outcome": "unchanged", "job": job.id, "stage": "inbox",
                   "message": f"cmd:fake:1 is job {job.id} (inbox), imported already with this "
                              "content: nothing changed"}
    ran = aq("from-tracker", "--json", "--query", "cmd:fake")
    assert ran.returncode == 1
    assert [(r["ref"], r["outcome"]) for r in json.loads(ran.stdout)] == [
        ("cmd:fake:1", "unchanged"), ("cmd:fake:2", "failed")]


# --- a worker's posts ------------------------------------------------------------------------------

def test_a_worker_posts_progress_and_ship_posts_at_once(
        linked: Queue, tracker: FakeTracker, aq: Aq) -> None:
    """aq run sends each move's post as it goes and records it; aq ship sends 'done' at once."""
    # claimed first, and long enough to be seen building
    tracker.add("7", "Say hello", "sleep 1\necho hello", labels=("priority:high",))
    tracker.add("8", "Leak a token",
                'echo "the token is $MY_API_TOKEN"\necho "auth is $FAKE_TRACKER_AUTH"\nexit 3')
    assert aq("from-tracker", "cmd:fake:7", "cmd:fake:8").returncode == 0
    ran = aq("run", "--drain", "--worker", "w1",
             env={"MY_API_TOKEN": SECRET, "FAKE_TRACKER_AUTH": TRACKER_AUTH})
    assert ran.returncode == 0, ran.stderr
    hello, leak = job_of(linked, "cmd:fake:7"), job_of(linked, "cmd:fake:8")
    assert (hello.stage, leak.stage) == ("review", "failed")
    assert f"w1: cmd:fake:7: sent {hello.id}'s start" in ran.stdout

    said = tracker.said()
    assert [(verb, item) for verb, item, _ in said if item == "7"] == [
        ("status", "7"), ("comment", "7"), ("comment", "7")]
    assert [text for _, item, text in said if item == "7"] == [
        "doing", f"aq job `{hello.id}`: building, attempt 1, by worker `w1`.",
        f"aq job `{hello.id}`: attempt 1 finished; no verify command; now in review, waiting "
        "for a person to ship it."]
    failure = [text for _, item, text in said if item == "8"][-1]
    assert "failed (engine_failed)" in failure and "the token is [REDACTED]" in failure
    assert "auth is [REDACTED]" in failure  # secret because aq.yaml's secret_env says so
    assert all(SECRET not in text and TRACKER_AUTH not in text for _, _, text in said)
    kept = (linked.root / "queue" / ".logs" / leak.id / "1.log").read_text()
    assert "auth is [REDACTED]" in kept and TRACKER_AUTH not in kept
    assert TRACKER_AUTH not in (linked.root / "queue" / ".events" / f"{leak.id}.jsonl").read_text()

    moves = [e for e in events(linked.root, hello.id) if e["type"] in ("claimed", "finished")]
    posted = events(linked.root, hello.id, POSTED)
    assert [e["for"] for e in posted] == [post_key(hello.id, e) for e in moves]
    assert {(e["by"], e["ref"]) for e in posted} == {("w1", "cmd:fake:7")}

    ran = aq("ship", hello.id, "--json")
    assert ran.returncode == 0, ran.stderr
    [sent] = json.loads(ran.stdout)["tracker"]
    assert (sent["job"], sent["ref"], sent["ok"]) == (hello.id, "cmd:fake:7", True)
    assert tracker.said()[len(said):] == [
        ("status", "7", "closed"), ("comment", "7", f"aq job `{hello.id}`: shipped by "
                                    f"{events(linked.root, hello.id, 'moved')[0]['by']}. Attempt 1: no verify command.")]
    assert len(events(linked.root, hello.id, POSTED)) == 3
    ran = aq("to-tracker", "--all")
    assert (ran.returncode, ran.stdout) == (0, "nothing owed to trackers\n")


def test_a_tracker_down_during_a_run_leaves_posts_owed_then_to_tracker_sends_them_once(
        queue_root: Path, tracker: FakeTracker, aq: Aq) -> None:
    """The job finishes anyway; after trackers.takeover, aq to-tracker sends each owed post once, in order."""
    configure(queue_root, tracker, takeover="1s")
    queue = Queue(queue_root)
    tracker.add("7", "Say hello", "echo hello")
    assert aq("from-tracker", "cmd:fake:7").returncode == 0
    tracker.fail()
    ran = aq("run", "--drain", "--worker", "w1")
    assert ran.returncode == 0, ran.stderr
    job = job_of(queue, "cmd:fake:7")
    assert job.stage == "review" and tracker.posts() == []
    assert ("w1: tracker: cmd:fake: " in ran.stdout
            and "fake: 503 from the server (auth none); it stays owed" in ran.stdout), ran.stdout
    assert events(queue_root, job.id, POSTED) == []

    tracker.fail(False)
    moved = parse_iso(events(queue_root, job.id)[-1]["ts"])
    time.sleep(max(0.0, (moved + timedelta(seconds=1.2) - datetime.now(UTC)).total_seconds()))
    ran = aq("to-tracker", "--all", "--json")
    assert ran.returncode == 0, ran.stderr
    report = json.loads(ran.stdout)
    assert report["waiting"] == []
    assert [(s["job"], s["ref"], s["ok"], s["url"]) for s in report["sent"]] == [
        (job.id, "cmd:fake:7", True, None)] * 2
    assert tracker.said() == [
        ("status", "7", "doing"),  # the late claim still marks the item in progress
        ("comment", "7", f"aq job `{job.id}`: building, attempt 1, by worker `w1`."),
        ("comment", "7", f"aq job `{job.id}`: attempt 1 finished; no verify command; now in "
                         "review, waiting for a person to ship it.")]
    taken, posted = events(queue_root, job.id, POSTING), events(queue_root, job.id, POSTED)
    released = [e["for"] for e in taken if e.get("released")]  # w1 let them go as it ended
    claimed = [e["for"] for e in taken if not e.get("released")]
    assert released == claimed == [e["for"] for e in posted] and len(posted) == 2
    assert {e["by"] for e in taken if e.get("released")} == {"w1"}
    assert len({e["by"] for e in taken + posted} - {"w1"}) == 1

    ran = aq("to-tracker", "--all")
    assert (ran.returncode, ran.stdout) == (0, "nothing owed to trackers\n")
    assert len(tracker.posts()) == 3  # status, then the two comments

    tracker.fail()
    ran = aq("ship", job.id)
    assert ran.returncode == 0 and f"{job.id}: review -> shipped" in ran.stdout
    assert f"it stays owed: 'aq to-tracker {job.id}' sends it" in ran.stderr
    ran = aq("to-tracker", job.id)
    assert ran.returncode == 1 and ran.stdout == ""
    assert ran.stderr.startswith("aq: cmd:fake: ") and ran.stderr.endswith("; still owed\n")
    tracker.fail(False)
    ran = aq("to-tracker", job.id[:12])
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == f"cmd:fake:7: sent {job.id}'s ship\n"
    assert tracker.said()[3:] == [("status", "7", "closed"),
                                  ("comment", "7", f"aq job `{job.id}`: shipped by "
                                   f"{events(queue_root, job.id, 'moved')[0]['by']}. Attempt 1: "
                                   "no verify command.")]


def test_watch_keeps_importing_until_interrupted(queue_root: Path, linked: Queue,
                                                 tracker: FakeTracker) -> None:
    """`--query --watch --every 0.2s` imports what the query returns, then what appears later,
    says nothing of items it already has, and ends quietly on Ctrl-C (130, as the shell expects)."""
    tracker.add("1", "First")
    watcher = subprocess.Popen(
        [sys.executable, "-m", "aq", "from-tracker", "--query", "cmd:fake", "--watch", "--every",
         "0.2s"], cwd=queue_root, env=aq_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, preexec_fn=ctrl_c_as_a_terminal_sends_it)
    try:
        def linked_items() -> set[str]:
            return {job.manifest.tracker_item for job in Queue(queue_root).snapshot().jobs
                    if job.manifest and job.manifest.tracker_item}

        assert wait_until(lambda: linked_items() == {"cmd:fake:1"}, within=30)
        tracker.add("2", "Second")
        assert wait_until(lambda: linked_items() == {"cmd:fake:1", "cmd:fake:2"}, within=30)
        time.sleep(0.6)  # a few more looks: nothing new to say
        watcher.send_signal(signal.SIGINT)
        out, err = watcher.communicate(timeout=30)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    assert watcher.returncode == 130, err  # Ctrl-C, quietly
    lines = out.splitlines()
    assert [line.split(" -> ")[0] for line in lines] == ["cmd:fake:1", "cmd:fake:2"], out
    assert all("added" in line for line in lines)


# --- the move and the watch, as use-cases -------------------------------------------------------

def test_a_persons_move_posts_to_its_item_at_once(linked: Queue, tracker: FakeTracker) -> None:
    """move_job (what the CLI and the dash call) says the move first, then sends the post it owes."""
    ref = tracker.add("1", "One", "echo one")
    [imported] = imports(linked, ref)
    job_id = imported.job_id or ""
    heard: list[tuple[str, int]] = []
    result = move_job(linked, job_id, Action.CANCEL, who=WHO, now=T0 + timedelta(minutes=1),
                      env=env(), announce=lambda moved: heard.append((moved.job_id,
                                                                      len(tracker.said()))))
    assert heard == [(job_id, 0)]  # announced before the tracker heard of it
    assert [(s.ok, s.ref) for s in result.tracker] == [(True, ref)]
    assert [verb for verb, _, _ in tracker.said()] == ["comment"]
    assert owed_posts(linked.resolve(job_id), linked.read_events(job_id)) == []


def test_a_watch_yields_each_looks_news_and_sleeps_between_looks(linked: Queue,
                                                                  tracker: FakeTracker) -> None:
    """Each look of `watch_imports` yields only what it has not said before, then sleeps `every`;
    `stop` ends it after a look."""
    tracker.add("1", "First")
    slept: list[float] = []
    stopping = [False]
    looks = watch_imports(linked, [], "cmd:fake", label=None, every=5.0, clock=lambda: T0,
                          who=WHO, entropy=itertools.count(1).__next__, new=False, env=env(),
                          sleep=slept.append, stop=lambda: stopping[0])
    assert [(r.ref, r.outcome) for r in next(looks)] == [("cmd:fake:1", "added")]
    assert next(looks) == [] and slept == [5.0]  # imported already: no news
    tracker.add("2", "Second")
    assert [(r.ref, r.outcome) for r in next(looks)] == [("cmd:fake:2", "added")]
    stopping[0] = True
    assert list(looks) == [] and slept == [5.0, 5.0]


def test_show_says_a_post_let_go_is_anyones_to_send(queue_root: Path) -> None:
    """A post its holder let go has no holder: show said "sent by , or anyone after ..."."""
    write_job(queue_root, "j", stage="failed", tracker_item="cmd:fake:1")
    move = moved("2026-12-06T00:00:00Z", "p@h", "inbox", "failed", "cancel", "canceled")
    let_go = tracker_posting("2026-12-06T00:00:05Z", "p@h", "p@h/1/ab", post_key("j", move),
                             "cmd:fake:1", released=True)
    (queue_root / "queue" / ".events" / "j.jsonl").write_text(
        "".join(json.dumps(event) + "\n" for event in (move, let_go)))
    shown = run_aq("show", "j", cwd=queue_root)
    assert "  tracker:  cmd:fake:1: 0 post(s) sent, 1 owed (let go: anyone sends it; aq " \
           "to-tracker)" in shown.stdout.splitlines(), shown.stdout
