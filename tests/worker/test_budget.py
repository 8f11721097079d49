"""Budgets, enforced by aq itself on a real engine process whose stdout streams usage the way
claude's stream-json does: a job's budget.usd / budget.tokens stop the attempt as its running
usage crosses them, and aq.yaml's queue budget halts the queue."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.cli import run_aq
from tests.helpers.queue import events, make_queue, paid_body, stage_of, write_job

STREAMER = """
for i in $(seq 1 40); do
  echo '{"type":"assistant","message":{"model":"m1","usage":{"input_tokens":100000,"output_tokens":0}}}'
  echo "step $i" >&2
  sleep 0.1
done
echo 'all steps done'
"""


CONFIG = """
engines:
  streamer:
    cmd: [bash, "{prompt_file}"]
    input: body
    usage: claude-json
prices:
  m1: {input: 10, output: 10}
"""


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    queue = make_queue(tmp_path / "q", monkeypatch)
    config = queue / "aq.yaml"
    config.write_text(config.read_text().replace("default_engine: shell", "default_engine: streamer")
                      + CONFIG)
    return queue


@pytest.mark.parametrize("budget", [{"usd": 2.5}, {"tokens": 250_000}])
def test_an_attempt_is_stopped_as_its_streamed_usage_crosses_the_budget(
        root: Path, budget: dict[str, object]) -> None:
    """Each streamed message costs $1 (100k tokens at $10/M): a budget of $2.50 (or 250k tokens)
    stops the engine soon after its third message, and the job fails budget_exceeded without a
    retry."""
    write_job(root, "spender", STREAMER, budget=budget, retry={"max": 3, "backoff": "1s"})
    ran = run_aq("run", "--once", "--poll", "0.2", cwd=root, timeout=120)
    assert ran.returncode == 0, ran.stderr
    finished = events(root, "spender", "finished")[-1]
    assert (finished["outcome"], stage_of(root, "spender")) == ("budget_exceeded", "failed"), finished
    assert finished["action"] == "fail"
    # it crossed at the third message; on a busy machine a message or two more may stream out
    # between aq seeing that and the engine's end: never the forty
    usage = finished["usage"]
    assert 300_000 <= usage["input_tokens"] < 4_000_000, usage
    assert usage["cost_usd"] == pytest.approx(usage["input_tokens"] * 10 / 1e6)
    # what the engine wrote before the crossing message is in its log ("step 3" comes after
    # that message, and a quick stop can end the engine before it is written)
    log = (root / "queue" / ".logs" / "spender" / "1.log").read_text()
    assert "step 2" in log and "all steps done" not in log


def test_the_budget_counts_every_attempt_and_a_requeue_clears_the_count(root: Path) -> None:
    """Attempts of $1 against budget.usd $1.50: the first fails and is retried, the second
    crosses what is left and fails budget_exceeded; after a requeue the count starts again."""
    # a different failure each time, or the second would be dead-lettered as stuck
    # (the second sleeps after its $1 line: it is stopped by aq, not ended on its own)
    write_job(root, "spent", f"{paid_body(1.0)}\nhead -c 9 /dev/urandom | base64\n"
              'if [ "$AQ_ATTEMPT" != 1 ]; then sleep 30; fi\nexit 1',
              budget={"usd": 1.5}, retry={"max": 3, "backoff": "1s"})
    assert run_aq("run", "--drain", "--poll", "0.1", cwd=root, timeout=120).returncode == 0
    finished = events(root, "spent", "finished")
    assert [e["outcome"] for e in finished] == ["engine_failed", "budget_exceeded"]
    assert finished[-1]["detail"].startswith("budget.usd crossed: this attempt cost $1.0000 of $0.5000 left")
    assert stage_of(root, "spent") == "failed"
    shown = json.loads(run_aq("show", "spent", "--json", cwd=root).stdout)
    assert shown["spent"] == {"usd": 2.0, "tokens": 2020}
    assert run_aq("requeue", "spent", cwd=root).returncode == 0
    shown = json.loads(run_aq("show", "spent", "--json", cwd=root).stdout)
    assert shown["spent"] == {"usd": 0.0, "tokens": 0}


def test_a_queue_budget_crossed_halts_the_queue_until_a_person_resumes(root: Path) -> None:
    """budget.usd_per_day: the run that crosses it halts the queue with reason budget; the next
    job waits in the inbox until `aq resume`."""
    config = root / "aq.yaml"
    config.write_text(config.read_text() + "budget: {usd_per_day: 0.5}\n")
    write_job(root, "first", paid_body(0.6), priority="high")
    write_job(root, "second", paid_body(0.1), priority="low")
    assert run_aq("run", "--drain", "--poll", "0.1", cwd=root, timeout=120).returncode == 0
    assert stage_of(root, "first") == "review" and stage_of(root, "second") == "inbox"
    halt = (root / "queue" / "HALT").read_text().splitlines()[0]
    assert halt.startswith("budget: ") and "$0.60" in halt and "usd_per_day $0.50" in halt
    assert run_aq("resume", cwd=root).returncode == 0
    assert run_aq("run", "--drain", "--poll", "0.1", cwd=root, timeout=120).returncode == 0
    assert stage_of(root, "second") == "review"
    assert (root / "queue" / "HALT").exists()  # still over for the day: halted again


def test_show_and_stats_say_what_attempts_cost(root: Path) -> None:
    """`aq show` prints an attempt's engine and usage; `aq stats --json` sums cost and tokens
    per engine and per shipped job."""
    write_job(root, "costly", paid_body(0.25, "sess-9"))
    assert run_aq("run", "--once", "--poll", "0.1", cwd=root, timeout=120).returncode == 0
    shown = run_aq("show", "costly", cwd=root).stdout
    assert "streamer: m1; 1,000 in; 10 out; $0.2500; 1 turn(s); session sess-9" in shown
    assert run_aq("ship", "costly", cwd=root).returncode == 0
    stats = json.loads(run_aq("stats", "--json", cwd=root).stdout)
    engine = next(row for row in stats["per_engine"] if row["name"] == "streamer")
    assert engine["cost_usd"] == pytest.approx(0.25) and engine["tokens"] == 1010
    assert engine["first_attempts"] == 1 and engine["first_passed"] == 1
    assert stats["shipped_cost"] == [{"job": "costly", "cost_usd": 0.25, "tokens": 1010, "attempts": 1}]
