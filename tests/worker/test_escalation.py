"""Engine escalation: `retry: {escalate: [a, b, c]}` runs each retry on the next engine of the
list (the last one on); the claim records the engine chosen and why; a take-back is no step."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.helpers.cli import Ran
from tests.helpers.queue import configure, events, stage_of, write_job

Aq = Callable[..., Ran]


def recording_engine(out: Path, name: str) -> dict[str, object]:
    """An engine that notes its own name and the attempt, then fails (exit 1)."""
    script = f'echo "$AQ_ATTEMPT {name}" >> "$0/ran"\nexit 1'
    return {"cmd": ["bash", "-c", script, str(out), "{prompt_file}"], "input": "prompt"}


def test_attempt_k_runs_the_kth_engine_of_the_ladder_and_the_claim_says_why(
        queue_root: Path, aq: Aq, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    configure(queue_root, engines={name: recording_engine(out, name)
                                   for name in ("small", "medium", "large")})
    write_job(queue_root, "climb", "do it", retry={"escalate": ["small", "medium", "large"],
                                                   "backoff": "0s"})
    ran = aq("run", "--drain")
    assert ran.returncode == 0, ran.stderr
    assert (out / "ran").read_text().splitlines() == ["1 small", "2 medium", "3 large"]
    claims = events(queue_root, "climb", "claimed")
    assert [c["engine"] for c in claims] == ["small", "medium", "large"]
    assert claims[1]["engine_why"] == "retry.escalate step 2 of 3, after 1 retry"
    assert [f["engine"] for f in events(queue_root, "climb", "finished")] == \
        ["small", "medium", "large"]
    assert stage_of(queue_root, "climb") == "dead_letter"  # max defaults to the ladder's length - 1


def test_past_the_top_of_the_ladder_it_stays_on_the_last_engine(queue_root: Path, aq: Aq,
                                                                tmp_path: Path) -> None:
    """...until the same failure twice on it is 'stuck' (dead_letter), as without a ladder."""
    out = tmp_path / "out"
    out.mkdir()
    configure(queue_root, engines={name: recording_engine(out, name) for name in ("a", "b")})
    write_job(queue_root, "long", "do it",
              retry={"escalate": ["a", "b"], "max": 3, "backoff": "0s",
                     "on": ["engine_failed"]})
    ran = aq("run", "--drain")
    assert ran.returncode == 0, ran.stderr
    assert [line.split()[1] for line in (out / "ran").read_text().splitlines()][:2] == ["a", "b"]
    assert [line.split()[1] for line in (out / "ran").read_text().splitlines()] == ["a", "b", "b"]
    assert events(queue_root, "long", "finished")[-1]["why"] == \
        "stuck: the same failure twice in a row"


def test_a_ladder_naming_an_unknown_engine_is_refused_at_add(queue_root: Path, aq: Aq) -> None:
    ran = aq("add", "-", input="---\nretry: {escalate: [shell, nonesuch]}\n---\necho\n")
    assert ran.returncode == 1
    assert "retry.escalate: engine 'nonesuch' is not defined" in ran.stderr
    shown = aq("add", "-", "--json", input="---\nretry: {escalate: [shell]}\n---\necho\n")
    assert shown.returncode == 0 and json.loads(shown.stdout)["created"]
