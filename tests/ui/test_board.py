"""`aq board`: the data a board shows and its text at 80, 120 and 200 columns (lanes, then
columns), on a real queue in git."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from rich.cells import cell_len

from aq.core.events import iso
from aq.store.queue import Queue
from aq.store.sync import Remote
from aq.ui.board import BoardData, Card, board_data, board_text
from tests.helpers.cli import run_aq
from tests.helpers.git import git
from tests.helpers.queue import T0, make_queue, write_job

WIDTHS = (80, 120, 200)
COUNTS = {"inbox": 4, "building": 1, "review": 1, "testing": 1, "shipped": 8, "failed": 1,
          "dead_letter": 1}
LONG_TITLE = "Rewrite " + "the whole payment flow " * 12 + "END-OF-TITLE"
TOKEN = "2.w1.abc123"


def log(root: Path, job_id: str, *events: dict[str, object]) -> None:
    """Append events to a job's log the way workers and people do: one JSON object a line."""
    path = root / "queue" / ".events" / f"{job_id}.jsonl"
    with path.open("a") as out:
        for event in events:
            out.write(json.dumps(event) + "\n")


def added(hours_ago: float) -> dict[str, object]:
    return {"ts": iso(T0 - timedelta(hours=hours_ago)), "type": "added", "by": "me@host",
            "to": "inbox"}


def attempt(number: int, to: str, hours_ago: float, **extra: object) -> list[dict[str, object]]:
    """A claim by w1 and the end of that attempt, moving the job to `to`."""
    token = f"{number}.w1.abc12{number}"
    ts = iso(T0 - timedelta(hours=hours_ago))
    return [{"ts": ts, "type": "claimed", "by": "w1", "from": "inbox", "to": "building",
             "attempt": number, "token": token, "host": "h1"},
            {"ts": ts, "type": "finished", "by": "w1", "from": "building", "to": to,
             "action": "submit", "attempt": number, "token": token, "outcome": "ok", **extra}]


def fill(root: Path) -> None:
    """Jobs in every stage: a blocked inbox job, a long title, a held building job on its second
    attempt, a review job that changed files out of scope, eight shipped jobs."""
    write_job(root, "ready-high", title="Add retries", priority="high")
    write_job(root, "urgent-late", title="Hotfix the outage", priority="critical")
    write_job(root, "waits-on-ghost", title="Needs a ghost", deps=["no-such-job"])
    write_job(root, "long-title", title=LONG_TITLE, priority="low")
    log(root, "ready-high", added(5))
    log(root, "urgent-late", added(1))  # the youngest, but critical: first in pick order
    log(root, "waits-on-ghost", added(4))
    log(root, "long-title", added(3))
    write_job(root, "build-a", title="Build the thing", stage="building", profile="reviewer",
              engine="shell", capabilities=["os:linux"], tracker_item="github:acme/web#12")
    first = attempt(1, "inbox", 2)
    log(root, "build-a", added(6), *first,
        {"ts": iso(T0 - timedelta(minutes=30)), "type": "claimed", "by": "w1", "from": "inbox",
         "to": "building", "attempt": 2, "token": TOKEN, "host": "h1"})
    write_job(root, "scoped", title="Touch only docs", stage="review")
    log(root, "scoped", added(7), *attempt(1, "review", 2, out_of_scope=["etc/passwd", "x.py"]))
    write_job(root, "in-test", title="\x1b[31mred alert\x1b[0m in a title", stage="testing")
    log(root, "in-test", added(9), *attempt(1, "testing", 3, branch="aq/in-test", head="abc123",
                                            pushed=True))
    write_job(root, "broke", title="It broke", stage="failed")
    log(root, "broke", added(9), *attempt(1, "failed", 3, branch="aq/broke", head="def456",
                                          pushed=False))
    write_job(root, "gave-up", title="Gave up", stage="dead_letter")
    for index in range(8):  # added newest-first, finished oldest-first: ship-7 shipped last
        write_job(root, f"ship-{index}", title=f"Shipped {index}", stage="shipped")
        log(root, f"ship-{index}", added(100 - (7 - index)), *attempt(1, "shipped", 50 - index))


@pytest.fixture(scope="module")
def queue(tmp_path_factory: pytest.TempPathFactory) -> Queue:
    """The filled queue, committed and pushed to a bare remote, where worker w1 beat once. One
    for the module: the tests that use it only read it (and the board of it)."""
    tmp_path = tmp_path_factory.mktemp("board")
    with pytest.MonkeyPatch.context() as monkeypatch:  # the tests' git identity while it is made
        queue_root = make_queue(tmp_path / "q", monkeypatch)
        fill(queue_root)
        bare = tmp_path / "remote.git"
        git(tmp_path, "init", "-q", "--bare", str(bare))
        git(queue_root, "add", "-A")
        git(queue_root, "commit", "-q", "-m", "jobs in every stage")
        git(queue_root, "remote", "add", "origin", str(bare))
        git(queue_root, "push", "-q", "origin", "HEAD")
        remote = Remote.detect(queue_root, None)
        assert remote is not None
        assert remote.heartbeat("w1", {"worker": "w1", "seq": 1, "tokens": [TOKEN]})
    return Queue(queue_root)


@pytest.fixture(scope="module")
def data(queue: Queue) -> BoardData:
    """The board 12 s (on this machine's clock) after a fetch that saw w1's heartbeat (frozen:
    one for the module)."""
    board_data(queue, now=T0, monotonic=1000.0, fetch=True)
    return board_data(queue, now=T0, monotonic=1012.0)


def cards(data: BoardData, stage: str) -> tuple[Card, ...]:
    return next(shown for name, _count, shown in data.columns if name == stage)


@pytest.mark.parametrize("width", WIDTHS)
def test_every_stage_shows_its_name_and_count_within_the_width(data: BoardData, width: int) -> None:
    """Each of the seven stages appears with its job count, and no line is wider than the terminal."""
    text = board_text(data, width=width, color=False)
    for stage, count in COUNTS.items():
        assert f"{stage} ({count})" in text
    assert [(name, count) for name, count, _cards in data.columns] == list(COUNTS.items())
    too_wide = [line for line in text.splitlines() if cell_len(line) > width]
    assert too_wide == []
    assert "1 worker seen" in text.splitlines()[0]


@pytest.mark.parametrize("width", WIDTHS)
def test_plain_text_has_no_escape_code_even_from_a_title(data: BoardData, width: int) -> None:
    """Without colour the board is plain text: no escape code, not even one a job's title holds."""
    text = board_text(data, width=width, color=False)
    assert "\x1b" not in text
    assert "red alert" in text
    assert "\x1b[" in board_text(data, width=width, color=True)


@pytest.mark.parametrize("width", WIDTHS)
def test_a_long_title_is_cut_with_an_ellipsis_on_one_line(data: BoardData, width: int) -> None:
    """A title longer than its column is cut with '…' on its one line, never wrapped onto the next."""
    text = board_text(data, width=width, color=False)
    lines = [line for line in text.splitlines() if "Rewrite the whole" in line]
    assert len(lines) == 1
    assert "…" in lines[0]
    assert "END-OF-TITLE" not in text
    assert cards(data, "inbox")[-1].title == LONG_TITLE  # the data keeps it whole


@pytest.mark.parametrize("width", WIDTHS)
def test_shipped_shows_its_count_and_the_latest_five_newest_first(data: BoardData, width: int) -> None:
    """Shipped holds 8 jobs and shows the 5 that finished last, newest first, and how many it left out."""
    assert [card.job_id for card in cards(data, "shipped")] == [f"ship-{i}" for i in (7, 6, 5, 4, 3)]
    text = board_text(data, width=width, color=False)
    assert "shipped (8)" in text
    where = [text.index(f"ship-{i}") for i in (7, 6, 5, 4, 3)]
    assert where == sorted(where)
    assert not any(f"ship-{i}" in text for i in (0, 1, 2))
    assert "… 3 earlier" in text


@pytest.mark.parametrize("width", WIDTHS)
def test_a_building_card_shows_its_holder_and_heartbeat_age(data: BoardData, width: int) -> None:
    """A building job's card names the worker holding its lease, how long its attempt has run
    (claimed 30 minutes before `now`) and how long ago this machine saw its heartbeat move."""
    (card,) = cards(data, "building")
    assert (card.holder, card.heartbeat_age, card.attempt) == ("w1", 12.0, 2)
    assert (card.profile, card.engine, card.tracker_item) == ("reviewer", "shell", "github:acme/web#12")
    text = board_text(data, width=width, color=False)
    assert "w1 · 30m · seen 12s ago" in text
    assert "attempt 2" in text


@pytest.mark.parametrize("width", WIDTHS)
def test_a_job_branch_shows_and_an_unpushed_one_is_marked(data: BoardData, width: int) -> None:
    """A job with a repo shows its branch on its card; a branch whose work is not on the repo's
    remote says so."""
    assert [(c.branch, c.branch_pushed) for c in cards(data, "testing")] == [("aq/in-test", True)]
    assert [(c.branch, c.branch_pushed) for c in cards(data, "failed")] == [("aq/broke", False)]
    assert [c.branch for c in cards(data, "review")] == [None]
    text = board_text(data, width=width, color=False)
    assert "aq/in-test" in text
    assert text.count("⚠ unpushed") == 1  # broke's card only


@pytest.mark.parametrize("width", WIDTHS)
def test_blocked_reason_and_scope_mark_show(data: BoardData, width: int) -> None:
    """An inbox job that waits shows why, and a job that changed files outside its scope carries '⚠ scope'."""
    text = board_text(data, width=width, color=False)
    assert "⊘ dep no-such-job" in text
    assert "⚠ scope (2)" in text
    assert [card.out_of_scope for card in cards(data, "review")] == [2]


def test_block_reasons_are_those_of_aq_ls(queue: Queue, data: BoardData) -> None:
    """The board's block reason for an inbox job is the one `aq ls --json` gives."""
    listed = json.loads(run_aq("ls", "--json", cwd=queue.root).stdout)
    reasons = {job["id"]: job["blocked"]["reason"] for job in listed if job.get("blocked")}
    assert {card.job_id: card.blocked for card in cards(data, "inbox") if card.blocked} == reasons
    assert reasons == {"waits-on-ghost": "dep no-such-job does not exist"}


def test_inbox_cards_are_in_pick_order(data: BoardData) -> None:
    """Inbox cards run in the order a worker takes them: priority first, then oldest first."""
    assert [card.job_id for card in cards(data, "inbox")] == [
        "urgent-late", "ready-high", "waits-on-ghost", "long-title"]


def test_a_stage_with_more_cards_than_shown_counts_the_rest(data: BoardData) -> None:
    """A stage shows at most `max_cards` cards and says how many more it holds; an empty column
    shows a dash, an empty lane its title alone."""
    empty = BoardData(tuple((name, 0, ()) for name, _count, _cards in data.columns), None, 0, ())
    text = board_text(data, width=80, color=False, max_cards=2)
    assert "… 2 more" in text
    assert "waits-on-ghost" not in text
    assert "\N{EN DASH}" in board_text(empty, width=200, color=False)
    assert board_text(empty, width=80, color=False).splitlines()[1:] == [
        f"{name} (0) ".ljust(80, "─") for name, _count, _cards in data.columns]


def test_an_unreachable_remote_is_a_problem_line_not_an_error(queue_root: Path) -> None:
    """board_data with fetch on a queue whose remote does not answer shows the clone and says so."""
    fill(queue_root)
    git(queue_root, "remote", "add", "origin", str(queue_root.parent / "no-such-remote.git"))
    data = board_data(Queue(queue_root), now=T0, monotonic=1000.0, fetch=True)
    assert any("cannot reach the queue's remote 'origin'" in problem for problem in data.problems)
    assert sum(count for _name, count, _cards in data.columns) == sum(COUNTS.values())
    assert "cannot reach the queue's remote" in board_text(data, width=80, color=False)


def test_a_parent_card_counts_its_settled_children_and_a_child_names_its_parent(
        queue_root: Path) -> None:
    write_job(queue_root, "fanout", "echo parent")
    write_job(queue_root, "kid-a", "echo a", stage="review", parent="fanout")
    write_job(queue_root, "kid-b", "echo b", parent="fanout")
    data = board_data(Queue(queue_root), now=T0, monotonic=0.0)
    cards = {card.job_id: card for _, _, shown in data.columns for card in shown}
    assert cards["fanout"].children == (1, 2) and cards["fanout"].parent is None
    assert cards["kid-b"].parent == "fanout" and cards["kid-b"].children is None
    text = board_text(data, width=200, color=False)
    assert "children 1/2" in text and "child of fanout" in text
