"""`aq board` for a person at a terminal: a 31-job queue with a long job running, rendered by rich
at 80x24, 120x40 and 200x50. Every stage is on screen, nothing is wider or higher than the
terminal, a long reason wraps instead of being cut, a failed card says why, and times are
relative to the board's `now`."""

from __future__ import annotations

import io
import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
from rich.cells import cell_len
from rich.console import Console

from aq.core.events import iso
from aq.errors import UsageError
from aq.store.queue import Queue
from aq.ui.board import BoardData, board_data, board_text, render_board, stages_from
from tests.helpers.cli import run_aq
from tests.helpers.queue import T0, make_queue, write_job
from tests.ui.test_board import added, log

SIZES = ((80, 24), (120, 40), (200, 50))
COUNTS = {"inbox": 12, "building": 1, "review": 3, "testing": 2, "shipped": 9, "failed": 2,
          "dead_letter": 2}
NEEDS = ["gpu:nvidia-a100-80gb", "region:eu-west-3-private", "docker-rootless"]
REASON_END = "that this worker lacks"
NOT_FOUND = "/q/.git/aq/running/nf/1.prompt: line 1: frobnicate: command not found"


def ts(minutes: float) -> str:
    """`minutes` after T0 (before it when negative), as aq writes times."""
    return iso(T0 + timedelta(minutes=minutes))


def ended(job_id: str, to: str, minutes: float, outcome: str = "ok", **extra: object
          ) -> list[dict[str, object]]:
    """A claim by w1 and that attempt's end `minutes` after T0, moving the job to `to`."""
    token = f"1.w1.{job_id}"
    return [{"ts": ts(minutes - 5), "type": "claimed", "by": "w1", "from": "inbox",
             "to": "building", "attempt": 1, "token": token},
            {"ts": ts(minutes), "type": "finished", "by": "w1", "from": "building", "to": to,
             "action": "submit", "attempt": 1, "token": token, "outcome": outcome, **extra}]


def fill(root: Path) -> None:
    """31 jobs: a critical inbox job that needs capabilities no worker here has (a long reason),
    one waiting out its retry's backoff, a job building for 12 minutes on its second attempt
    (the first cost $0.30, this one $0.12 so far), two failed ones (a missing command, a failed
    assertion), two dead-lettered ones, and review, testing and shipped jobs."""
    write_job(root, "gpu-train", title="Train the ranking model", priority="critical",
              capabilities=NEEDS)
    write_job(root, "flaky", title="Fix the flaky upload test", priority="high")
    log(root, "flaky", added(3), *ended("flaky", "inbox", -1, "engine_failed", action="retry",
                                        not_before=ts(4), backoff=240.0))
    for index in range(10):
        write_job(root, f"todo-{index}", title=f"Chore number {index}", priority="low")
        log(root, f"todo-{index}", added(2 + index / 10))
    write_job(root, "long-run", title="Migrate every service to the new config loader",
              stage="building")
    log(root, "long-run", added(5), *ended("long-run", "inbox", -20, "timeout", action="retry",
                                            usage={"cost_usd": 0.30}),
        {"ts": ts(-12), "type": "claimed", "by": "w1", "from": "inbox", "to": "building",
         "attempt": 2, "token": "2.w1.long"})
    running = Queue(root).running_dir() / "long-run"
    running.mkdir(parents=True)
    (running / "2.usage.json").write_text(json.dumps({"cost_usd": 0.12}))
    for stage, count in (("review", 3), ("testing", 2), ("shipped", 9)):
        for index in range(count):
            job_id = f"{stage}-{index}"
            write_job(root, job_id, title=f"{stage.title()} job {index}", stage=stage)
            log(root, job_id, added(9), *ended(job_id, stage, -60 - index))
    _fill_failures(root)


def _fill_failures(root: Path) -> None:
    write_job(root, "nf", title="Run the formatter", stage="failed")
    log(root, "nf", added(4), *ended(
        "nf", "failed", -30, "engine_failed", action="fail",
        tail=f"starting\n{NOT_FOUND}\n[engine_failed: engine exited with 127]"))
    write_job(root, "vf", title="Reconcile the ledgers", stage="failed")
    log(root, "vf", added(4), *ended(
        "vf", "failed", -31, "verify_failed", action="fail",
        tail="Traceback (most recent call last):\nAssertionError: totals differ\n"
             "[verify_failed: verify exited with 1]"))
    write_job(root, "stuck", title="Tune the retry policy", stage="dead_letter")
    log(root, "stuck", added(4), *ended(
        "stuck", "dead_letter", -40, "verify_failed", action="dead",
        why="stuck: the same failure twice in a row",
        tail="ValueError: bad config key 'retries'\n[verify_failed: verify exited with 1]"))
    write_job(root, "lost", title="Rebuild the search index", stage="dead_letter")
    log(root, "lost", added(4), *ended(
        "lost", "dead_letter", -50, "lease_expired", action="dead",
        why="lease_expired: no heartbeat for 120s; taken back 3 times (max_reclaims 3)"))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    with pytest.MonkeyPatch.context() as monkeypatch:
        queue_root = make_queue(tmp_path_factory.mktemp("fit") / "q", monkeypatch)
    fill(queue_root)
    return queue_root


@pytest.fixture(scope="module")
def data(root: Path) -> BoardData:
    """The board at T0, on a machine with no capabilities."""
    return board_data(Queue(root), now=T0, monotonic=0.0, capabilities=frozenset())


def screen(data: BoardData, width: int, height: int, stages: tuple[str, ...] | None = None
           ) -> list[str]:
    """The board as a terminal of `width` x `height` shows it: rich's recorded text, by line."""
    console = Console(width=width, height=height, record=True, file=io.StringIO(),
                      color_system=None, legacy_windows=False)
    console.print(render_board(data, width=width, height=height, stages=stages))
    return console.export_text().splitlines()


def stage_text(lines: list[str], stage: str) -> str:
    """The words one stage shows, in its lane or its column, its lines joined by single spaces."""
    title = next(i for i, line in enumerate(lines) if re.search(rf"(^|│ ){stage} \(", line))
    if "│" not in lines[title]:  # a lane: its title, then its indented cards
        cells = [lines[title]]
        for line in lines[title + 1:]:
            if not line.startswith(" "):
                break
            cells.append(line)
    else:  # a column: the same slice of every line under its title and rule
        bars = [found.start() for found in re.finditer("│", lines[title])]
        start = lines[title].index(f"{stage} (")
        end = next((bar for bar in bars if bar > start), None)
        cells = [line[start:end] for line in (lines[title], *lines[title + 2:])]
    return " ".join(" ".join(cells).split())


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_every_stage_is_on_screen_and_nothing_past_its_edges(
        data: BoardData, width: int, height: int) -> None:
    """Each of the seven stages shows its name and count, with no line wider than the terminal
    and no more lines than it has."""
    assert sum(count for _name, count, _cards in data.columns) == 31
    lines = screen(data, width, height)
    text = "\n".join(lines)
    for stage, count in COUNTS.items():
        assert f"{stage} ({count})" in text
    assert len(lines) <= height
    assert [line for line in lines if cell_len(line) > width] == []


def test_at_80x24_every_stage_shows_a_card_and_says_how_many_more(data: BoardData) -> None:
    """The lines are shared: each stage shows at least its first card (in pick order) and its
    title counts what did not fit; the header says where to see them."""
    lines = screen(data, 80, 24)
    text = "\n".join(lines)
    for first in ("gpu-train", "long-run", "review-0", "testing-0", "shipped-0", "nf", "stuck"):
        assert re.search(rf"^  {re.escape(first)}\s", text, re.M), first
    inbox_title = next(line for line in lines if line.startswith("inbox (12)"))
    shown = sum(1 for line in lines if line.startswith(("  todo-", "  gpu-train", "  flaky")))
    assert inbox_title.endswith(f"… {12 - shown} more")
    assert "aq board -s STAGE" in lines[0]


@pytest.mark.parametrize(("width", "height"), [(80, 24), (120, 40)])
def test_a_long_reason_is_shown_whole(data: BoardData, width: int, height: int) -> None:
    """The reason a critical inbox job waits (104 characters) sits under its card's title, whole:
    on two lines at 80 columns, on one at 120."""
    reason = f"⊘ needs capability {', '.join(NEEDS)} {REASON_END}"
    lines = screen(data, width, height)
    start = next(i for i, line in enumerate(lines) if "⊘ needs capability" in line)
    took = 2 if width == 80 else 1
    assert " ".join(line.strip() for line in lines[start:start + took]) == reason
    assert lines[start + took].startswith("  flaky ")


def test_a_reason_too_long_for_two_lines_of_a_column_is_cut_on_the_second(data: BoardData) -> None:
    """In a 200-column board's 27-cell column, the reason takes two lines and the second ends '…'."""
    lines = screen(data, 200, 50)
    start = next(i for i, line in enumerate(lines) if line.startswith("⊘ needs capability"))
    assert lines[start + 1].startswith("gpu:nvidia-a100-80gb,")
    assert lines[start + 1].split("│")[0].rstrip().endswith("…")
    assert lines[start + 2].startswith(" ")  # the card ends there


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_failed_and_dead_letter_cards_say_why(data: BoardData, width: int, height: int) -> None:
    """A failed card shows its last error line (exit 127 as the command not found), a
    dead-lettered one its error or why it was given up on."""
    lines = screen(data, width, height)
    failed, dead = stage_text(lines, "failed"), stage_text(lines, "dead_letter")
    assert re.search(r"nf MED Run the formatter (attempt 1 )?✗ command not found: frobnicate",
                     failed)
    assert "✗ AssertionError: totals differ" in failed
    assert "✗ ValueError: bad config key" in dead
    assert "✗ lease_expired: no heartbeat" in dead


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_times_are_relative_to_now(root: Path, data: BoardData, width: int, height: int) -> None:
    """The building job shows 12m (claimed 12 minutes before `now`) and its cost so far ($0.30 of
    its first attempt, $0.12 of this one); the retrying job `retry in 4m`; no raw time anywhere."""
    lines = screen(data, width, height)
    assert "w1 · 12m · $0.42" in stage_text(lines, "building")
    assert "flaky HIGH Fix the flaky upload test" in stage_text(lines, "inbox")
    assert "↻ retry in 4m" in stage_text(lines, "inbox")
    assert not re.search(r"\d{4}-\d\d-\d\dT\d\d:", "\n".join(lines))
    later = board_data(Queue(root), now=T0 + timedelta(minutes=3), monotonic=0.0,
                       capabilities=frozenset())
    moved_on = screen(later, width, height)
    assert "w1 · 15m · $0.42" in stage_text(moved_on, "building")
    assert "↻ retry in 1m" in stage_text(moved_on, "inbox")


def test_focused_stages_get_the_whole_screen(data: BoardData) -> None:
    """`--stage failed,dead_letter` shows those two stages only, their cards whole."""
    lines = screen(data, 80, 24, stages=("failed", "dead_letter"))
    text = "\n".join(lines)
    assert "failed (2)" in text and "dead_letter (2)" in text
    assert not any(name in text for name in ("inbox (", "building (", "shipped ("))
    assert "ValueError: bad config key 'retries'" in text
    assert "more:" not in lines[0]
    short = screen(data, 80, 8, stages=("inbox",))  # 12 cards, 6 lines: `aq ls` lists them all
    assert len(short) == 8 and short[0].endswith("more: aq ls -s STAGE")


def test_stage_names_from_the_option() -> None:
    """--stage repeated or comma-separated gives the stages in board order; a wrong one is refused."""
    assert stages_from(["failed,inbox", " review "]) == ("inbox", "review", "failed")
    assert stages_from(None) is None and stages_from([","]) is None
    with pytest.raises(UsageError, match="'nope' is not a stage"):
        stages_from(["inbox,nope"])


def test_colours_by_stage_and_priority_are_kept(data: BoardData) -> None:
    """On a terminal the stage titles and priority labels keep their colours."""
    text = board_text(data, width=80, height=24, color=True)
    assert "\x1b[1;31mfailed (2)" in text  # bold red
    assert "\x1b[1;36mbuilding (1)" in text  # bold cyan
    assert "\x1b[1;31mCRIT" in text


def test_the_command_focuses_and_refuses_a_wrong_stage(root: Path) -> None:
    """`aq board --once -s failed` piped prints the failed stage alone; `-s nope` is one line and
    exit 2."""
    shown = run_aq("board", "--once", "-s", "failed", cwd=root)
    assert shown.returncode == 0, shown.stderr
    assert "failed (2)" in shown.stdout and "command not found: frobnicate" in shown.stdout
    assert "inbox (" not in shown.stdout
    wrong = run_aq("board", "--once", "-s", "nope", cwd=root)
    assert wrong.returncode == 2
    assert wrong.stderr.strip().count("\n") == 0 and "'nope' is not a stage" in wrong.stderr
