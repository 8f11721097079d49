"""A queue's files as a test sees them: a fresh queue, jobs dropped in by hand, the stage a job
is in and its events."""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from aq.usecases.setup import init_queue
from tests.helpers.cli import aq_env

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
STAGES = ("inbox", "building", "review", "testing", "shipped", "failed", "dead_letter")


def make_queue(root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh queue made by `aq init` at `root` (a git repo with one commit), shell engine by
    default, in an environment of the test's own git identity and no AQ_ settings."""
    for key in list(os.environ):
        if key.startswith("GIT_") or key.startswith("AQ_"):
            monkeypatch.delenv(key)
    for key, value in aq_env().items():
        if key.startswith("GIT_"):
            monkeypatch.setenv(key, value)
    if root.exists():
        init_queue(root)  # completes what is there, as `aq init` would
    else:
        shutil.copytree(_initialized(), root, symlinks=True)
    config = root / "aq.yaml"
    config.write_text(config.read_text().replace("default_engine: claude", "default_engine: shell")
                      .replace("kill_grace: 10s", "kill_grace: 2s"))
    return root


@functools.cache
def _initialized() -> Path:
    """A queue `aq init` made once in this test process, in the tests' git identity: a copy of
    it is what `aq init` makes in a new folder (its commit a few minutes older), without the five
    git commands that ~450 tests would each run. Less git's sample hooks, which git never runs
    and a machine with no git templates does not have: they are 13 of its ~95 files, and on a
    busy disk each file costs a test ~0.3 ms to make and ~0.1 ms to delete."""
    base = Path(tempfile.mkdtemp(prefix="aq-test-init-"))
    atexit.register(shutil.rmtree, base, ignore_errors=True)
    init_queue(base / "q")
    for sample in (base / "q" / ".git" / "hooks").glob("*.sample"):
        sample.unlink()
    return base / "q"


def write_job(root: Path, job_id: str, body: str = "echo hi", stage: str = "inbox", **keys: object) -> Path:
    """Drop a manifest file into a stage folder the way a person would (no event)."""
    front = {k.replace("_", "-"): v for k, v in keys.items()}
    text = (f"---\n{yaml.safe_dump(front, sort_keys=False)}---\n{body}\n" if front else f"{body}\n")
    path = root / "queue" / stage / f"{job_id}.md"
    path.write_text(text)
    return path


def write(root: Path, path: str, text: str) -> None:
    """A file at `path` under `root`, its folders made as needed."""
    (root / path).parent.mkdir(parents=True, exist_ok=True)
    (root / path).write_text(text)


def stage_of(root: Path, job_id: str) -> str | None:
    """The one stage folder holding the job (asserting it is never in two); None: in none."""
    found = [stage for stage in STAGES if (root / "queue" / stage / f"{job_id}.md").exists()]
    assert len(found) <= 1, f"{job_id} is in {found}"
    return found[0] if found else None


def events(root: Path, job_id: str, kind: str | None = None) -> list[dict[str, Any]]:
    """The job's events, oldest first (of one type, given `kind`); a job dropped in by hand has
    none until something happens to it."""
    path = root / "queue" / ".events" / f"{job_id}.jsonl"
    if not path.exists():
        return []
    found = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [event for event in found if kind is None or event.get("type") == kind]


def configure(root: Path, **values: Any) -> None:
    """Set top-level keys of aq.yaml (JSON is YAML), replacing the lines it already has."""
    path = root / "aq.yaml"
    lines = [line for line in path.read_text().splitlines() if line.split(":", 1)[0] not in values]
    lines += [f"{key}: {json.dumps(value)}" for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n")


# An engine that runs a job's body as a script and reads its output as claude's stream-json:
# a body of `paid_body(cost)` is an attempt that cost `cost` (aq.yaml `engines:` entry, appended).
PAID_ENGINE = """
engines:
  paid:
    cmd: [bash, "{prompt_file}"]
    input: body
    usage: claude-json
"""


def paid_body(cost: float, session: str = "s-1") -> str:
    """A job body that prints the result line claude's stream-json ends with, costing `cost`."""
    return "echo '" + json.dumps({
        "type": "result", "subtype": "success", "is_error": False, "total_cost_usd": cost,
        "session_id": session, "num_turns": 1,
        "modelUsage": {"m1": {"inputTokens": 1000, "outputTokens": 10, "costUSD": cost}},
    }) + "'"
