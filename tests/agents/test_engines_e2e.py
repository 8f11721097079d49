"""The built-in engines with the real agent CLIs (claude, codex, gemini) under `aq run`, each
pointed at a fake model API of ours: what reaches the model, what the `finished` event
records, that nothing an attempt started outlives it, and that budgets stop a run."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.agents.clis import TOOLS_BIN, prepare, require_cli
from tests.agents.fake_model_api import FakeModelAPI, Reply, ToolCall, Usage
from tests.helpers.cli import aq_env, run_aq
from tests.helpers.queue import events, make_queue, stage_of, write_job
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.slow

CLIS = ("claude", "codex", "gemini")
SCRIPTED = Usage(input=1000, output=7, cache_read=200, cache_write=30, reasoning=3)
# What aq records of SCRIPTED, per CLI. Input never counts cache reads (Anthropic's input_tokens
# already does not; OpenAI's and Gemini's do, and the readers take them out); output counts
# reasoning (OpenAI's output_tokens already does; Gemini reports thoughts apart, and the reader
# adds them back); claude's stream reports cache writes and no reasoning.
EXPECTED: dict[str, dict[str, Any]] = {
    "claude": {"input_tokens": 1000, "output_tokens": 7, "cache_read_tokens": 200,
               "cache_write_tokens": 30},
    "codex": {"input_tokens": 800, "output_tokens": 7, "cache_read_tokens": 200,
              "reasoning_tokens": 3},
    "gemini": {"input_tokens": 800, "output_tokens": 10, "cache_read_tokens": 200,
               "reasoning_tokens": 3},
}


def agent_queue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: str, extra: str = "") -> Path:
    root = make_queue(tmp_path / "q", monkeypatch)
    config = root / "aq.yaml"
    config.write_text(config.read_text().replace("default_engine: shell", f"default_engine: {cli}")
                      + extra)
    return root


def agent_env(cli: str, tmp_path: Path, api: FakeModelAPI, **extra: str) -> dict[str, str]:
    """The environment `aq run` gets: the CLI's own (config under a home of the test's) with
    the installed CLIs on PATH."""
    env = prepare(cli, tmp_path / f"home-{cli}", api.url)
    env["PATH"] = f"{TOOLS_BIN}{os.pathsep}{env.get('PATH', os.defpath)}"
    env.update(extra)
    return env


def marked_alive(mark: str) -> list[int]:
    """Processes alive (not zombies) whose environment holds AQ_TEST_MARK=<mark>."""
    needle = f"AQ_TEST_MARK={mark}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                if needle not in handle.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry}/stat", "rb") as handle:
                if handle.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    continue
        except OSError:
            continue
        found.append(int(entry))
    return found


def kill_marked(mark: str) -> None:
    for pid in marked_alive(mark):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("cli", CLIS)
def test_a_real_cli_runs_jobs_whose_bodies_look_like_options_or_are_huge(
        cli: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under `aq run`, each real CLI gets a `- list` body, a `--version` body and a 300 KiB body
    as prompt text, each job ends in review, and its `finished` event has the exact tokens the
    fake model reported (and claude's own cost)."""
    require_cli(cli)
    root = agent_queue(tmp_path, monkeypatch, cli)
    big_end = f"END-OF-BIG-BODY-{secrets.token_hex(4)}"
    bodies = {
        "listy": "- fix the bug in the parser\n- keep the tests green",
        "version": "--version",
        "big": "# A big job\n" + ("Lorem ipsum dolor sit amet. " * 40 + "\n") * 280 + big_end,
    }
    assert len(bodies["big"].encode()) > 300 * 1024
    for job_id, body in bodies.items():
        write_job(root, job_id, body)
    with FakeModelAPI(Reply("done", SCRIPTED)) as api:
        ran = run_aq("run", "--drain", "--poll", "0.2", cwd=root, timeout=600,
                     env=agent_env(cli, tmp_path, api))
        prompts = api.prompts()
    assert ran.returncode == 0, ran.stdout + ran.stderr
    for job_id, body in bodies.items():
        finished = events(root, job_id, "finished")
        log = (root / "queue" / ".logs" / job_id / "1.log").read_text()
        assert stage_of(root, job_id) == "review", (job_id, finished, log[-3000:])
        event = finished[-1]
        assert event["engine"] == cli and event.get("engine_version"), event
        usage = event["usage"]
        assert {key: usage.get(key) for key in EXPECTED[cli]} == EXPECTED[cli], usage
        if cli == "claude":  # claude prices its own runs: aq records that figure, not its own
            result = [json.loads(line) for line in log.splitlines()
                      if line.startswith('{"type":"result"')][-1]
            assert usage["cost_usd"] == pytest.approx(result["total_cost_usd"]) and usage["cost_usd"] > 0
            assert usage["session"] == result["session_id"]
        else:
            assert "cost_usd" not in usage  # no price table: unknown, never invented
        wanted = body.strip() if job_id != "big" else big_end
        assert any(wanted in prompt for prompt in prompts), (job_id, [p[:80] for p in prompts])


# How each attempt is stopped while its tool sleeps: one trigger per CLI, so all three paths run.
STOPS = {"claude": "timeout", "gemini": "cancel", "codex": "term"}


@pytest.mark.parametrize("cli", CLIS)
def test_a_tool_the_agent_started_in_its_own_session_dies_with_the_attempt(
        cli: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An agent's shell tool running `sleep 600` (claude and gemini start it in a session of its
    own) does not outlive its attempt, whether a timeout (claude), a person's cancel (gemini) or
    a TERM to the worker (codex) ends it."""
    require_cli(cli)
    how = STOPS[cli]
    root = agent_queue(tmp_path, monkeypatch, cli)
    started = tmp_path / "tool-started"
    write_job(root, "sleepy", "Run the sleep.", yolo=True, timeout="20s" if how == "timeout" else "10m")
    mark = secrets.token_hex(8)
    try:
        with FakeModelAPI(ToolCall(f"touch {started}; sleep 600", SCRIPTED), Reply("done")) as api:
            worker = subprocess.Popen(
                [sys.executable, "-m", "aq", "run", "--once", "--poll", "0.2"], cwd=root,
                env=aq_env(agent_env(cli, tmp_path, api, AQ_TEST_MARK=mark)),
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            try:
                assert wait_until(started.exists, within=120), "the agent never ran its tool"
                if how == "cancel":
                    assert run_aq("cancel", "sleepy", cwd=root).returncode == 0
                elif how == "term":
                    worker.send_signal(signal.SIGTERM)
                out, _ = worker.communicate(timeout=120)
            finally:
                if worker.poll() is None:
                    worker.kill()
        assert worker.returncode == 0, out
        # a canceled job is in failed already: its attempt's result is kept as stale
        result = events(root, "sleepy", "stale_result" if how == "cancel" else "finished")[-1]
        assert result["outcome"] == ("timeout" if how == "timeout" else "interrupted"), result
        assert stage_of(root, "sleepy") == {"timeout": "failed", "cancel": "failed", "term": "inbox"}[how]
        assert marked_alive(mark) == [], "processes of the attempt outlived it"
    finally:
        kill_marked(mark)


def test_claude_stops_at_the_budget_aq_passes_it_and_the_job_fails_budget_exceeded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With budget.usd below the price of two replies, claude gets the remainder as its own cap,
    stops after the first, and the job goes to failed with budget_exceeded, not retried."""
    require_cli("claude")
    root = agent_queue(tmp_path, monkeypatch, "claude")
    dear = Usage(input=200_000, output=20_000)  # several dollars a reply at any claude price
    write_job(root, "pricey", "Do two steps.", yolo=True, budget={"usd": 0.5},
              retry={"max": 2, "backoff": "1s"})
    with FakeModelAPI(ToolCall("true", dear), Reply("done", dear)) as api:
        ran = run_aq("run", "--once", "--poll", "0.2", cwd=root, timeout=300,
                     env=agent_env("claude", tmp_path, api))
        turns = len(api.turns)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    finished = events(root, "pricey", "finished")[-1]
    assert (finished["outcome"], stage_of(root, "pricey")) == ("budget_exceeded", "failed"), finished
    assert finished["usage"]["cost_usd"] > 0.5
    assert turns == 1, "claude asked the model again after crossing its budget"


@pytest.mark.parametrize("cli", CLIS)
def test_a_retry_from_session_resumes_the_agents_session_with_the_failure_as_its_prompt(
        cli: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """retry-from: session: the retry runs the CLI's own resume of the first attempt's session
    (the model sees the first prompt again as history) with the verify failure as the new
    prompt, and records this run's usage, not the session's running total."""
    require_cli(cli)
    root = agent_queue(tmp_path, monkeypatch, cli)
    body = f"Make the widget spin. {secrets.token_hex(4)}"
    write_job(root, "widget", body, verify='test "$AQ_ATTEMPT" -ge 2 || { echo "widget-still-broken"; exit 1; }',
              retry={"max": 1, "backoff": "1s"}, retry_from="session")
    with FakeModelAPI(Reply("done", SCRIPTED)) as api:
        ran = run_aq("run", "--drain", "--poll", "0.2", cwd=root, timeout=300,
                     env=agent_env(cli, tmp_path, api))
        last = api.turns[-1]
    assert ran.returncode == 0, ran.stdout + ran.stderr
    first, second = events(root, "widget", "finished")
    assert (first["outcome"], second["outcome"]) == ("verify_failed", "ok"), second
    session = first["usage"]["session"]
    log = (root / "queue" / ".logs" / "widget" / "2.log").read_text()
    assert f"(resuming session {session})" in log
    sent = json.dumps(last.body)
    assert "widget-still-broken" in sent and "Your previous attempt at this job failed" in sent
    assert body in sent, "the resumed session did not carry the first attempt's prompt"
    usage = second["usage"]
    assert {key: usage.get(key) for key in EXPECTED[cli]} == EXPECTED[cli], usage
