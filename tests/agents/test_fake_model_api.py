"""The real claude, codex and gemini CLIs, run against the fake model API.

Each case runs the CLI from .tools as a subprocess, headless, with the prompt on stdin and JSON
out, configured by `clis.prepare` to talk only to the fake; the CLI is skipped when ./test.sh
has not installed it. Every process a case starts carries a random AQ_TEST_MARK in its
environment, and the `mark` fixture SIGKILLs whatever still carries it at the end.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agents import clis
from tests.agents.fake_model_api import Error, FakeModelAPI, Reply, Slow, ToolCall, Usage

USAGE = Usage(input=1000, output=7, cache_read=200, cache_write=30, reasoning=3)
PROMPTS = ["- fix the bug in parse_date and add a test for it", "--version"]
TIMEOUT = 120
# gemini starts itself again, in a child node with a bigger heap, on a machine with memory to
# spare (not on a small one): a second start-up (~0.7 s of CPU) that changes nothing a plain
# reply pins. test_server_error_fails_the_run keeps it, as aq runs gemini.
ONE_PROCESS = {"gemini": {"GEMINI_CLI_NO_RELAUNCH": "true"}}


@pytest.fixture
def mark() -> Iterator[str]:
    """A random marker for the environment of every process the test starts; at teardown every
    process still carrying it is SIGKILLed (the agents start their tools in sessions of their
    own, out of reach of a kill of the CLI's process group)."""
    value = secrets.token_hex(8)
    yield value
    kill_marked(value)


def marked_pids(mark: str) -> list[int]:
    """Live processes whose environment holds AQ_TEST_MARK=mark (a zombie has no environ)."""
    needle = f"AQ_TEST_MARK={mark}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            pids.append(int(entry.name))
    return pids


def argv_of(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def kill_marked(mark: str) -> list[int]:
    """SIGKILL every marked process until none is left; the pids that were killed."""
    killed: list[int] = []
    for _ in range(100):
        pids = marked_pids(mark)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    return killed


def cli_env(name: str, api: FakeModelAPI, tmp_path: Path, mark: str) -> dict[str, str]:
    return {**clis.prepare(name, tmp_path / "home", api.url), "AQ_TEST_MARK": mark}


def workdir(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return work


def run_cli(name: str, api: FakeModelAPI, tmp_path: Path, mark: str, prompt: str,
            extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `name` once to completion with `prompt` on stdin (closed at its end), `extra` added
    to its environment."""
    return subprocess.run(
        clis.argv(name), input=prompt, capture_output=True, text=True, timeout=TIMEOUT,
        env={**cli_env(name, api, tmp_path, mark), **(extra or {})}, cwd=workdir(tmp_path),
        start_new_session=True)


def json_lines(stdout: str) -> list[dict[str, Any]]:
    lines = []
    for line in stdout.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            lines.append(value)
    return lines


def last_of(events: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    matching = [event for event in events if event.get("type") == kind]
    assert matching, f"no {kind!r} line in the output: {events}"
    return matching[-1]


def printed_usage(name: str, stdout: str) -> dict[str, Any]:
    """The token counts the CLI printed for the run, in its own field names."""
    events = json_lines(stdout)
    if name == "claude":
        result = last_of(events, "result")
        assert result["total_cost_usd"] > 0
        (model_usage,) = result["modelUsage"].values()
        usage = {key: result["usage"][key] for key in (
            "input_tokens", "output_tokens", "cache_read_input_tokens",
            "cache_creation_input_tokens")}
        return {**usage, **{key: model_usage[key] for key in (
            "inputTokens", "outputTokens", "cacheReadInputTokens", "cacheCreationInputTokens")}}
    if name == "codex":
        return dict(last_of(events, "turn.completed")["usage"])
    stats = last_of(events, "result")["stats"]
    return {key: stats[key] for key in ("input_tokens", "output_tokens", "cached")}


EXPECTED_USAGE = {
    "claude": {"input_tokens": 1000, "output_tokens": 7, "cache_read_input_tokens": 200,
               "cache_creation_input_tokens": 30, "inputTokens": 1000, "outputTokens": 7,
               "cacheReadInputTokens": 200, "cacheCreationInputTokens": 30},
    "codex": {"input_tokens": 1000, "cached_input_tokens": 200, "cache_write_input_tokens": 30,
              "output_tokens": 7, "reasoning_output_tokens": 3},
    "gemini": {"input_tokens": 1000, "output_tokens": 7, "cached": 200},
}


@pytest.mark.parametrize("prompt", PROMPTS, ids=["dash-prompt", "version-prompt"])
@pytest.mark.parametrize("name", clis.NAMES)
def test_plain_reply(name: str, prompt: str, tmp_path: Path, mark: str) -> None:
    """The CLI sends the stdin prompt to the fake as text, exits 0 and prints the scripted usage."""
    clis.require_cli(name)
    with FakeModelAPI(Reply("done", USAGE)) as api:
        ran = run_cli(name, api, tmp_path, mark, prompt, ONE_PROCESS.get(name))
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert prompt in [text.strip() for text in api.prompts()]
    assert printed_usage(name, ran.stdout) == EXPECTED_USAGE[name]


@pytest.mark.slow
@pytest.mark.parametrize("name", clis.NAMES)
def test_tool_call_runs_and_its_tree_dies(name: str, tmp_path: Path, mark: str) -> None:
    """With auto-approval the CLI runs the scripted shell command, and killing the CLI's group
    plus every process carrying the test's marker leaves no marked process behind."""
    clis.require_cli(name)
    with FakeModelAPI() as api:
        api.script(ToolCall("sleep 600", USAGE), Reply("done", USAGE))
        out = (tmp_path / "stdout").open("w+")
        cli = subprocess.Popen(
            clis.argv(name, yolo=True), stdin=subprocess.PIPE, stdout=out,
            stderr=subprocess.STDOUT, text=True, env=cli_env(name, api, tmp_path, mark),
            cwd=workdir(tmp_path), start_new_session=True)
        assert cli.stdin is not None
        cli.stdin.write("run the sleep")
        cli.stdin.close()
        try:
            sleeping = follow_up = False
            deadline = time.monotonic() + TIMEOUT
            while time.monotonic() < deadline and not sleeping and cli.poll() is None:
                sleeping = any(argv_of(pid)[-2:] == ["sleep", "600"]
                               for pid in marked_pids(mark))
                follow_up = len(api.turns) >= 2
                time.sleep(0.1)
            assert sleeping or follow_up, (tmp_path / "stdout").read_text()[-3000:]
        finally:
            os.killpg(cli.pid, signal.SIGKILL)
            kill_marked(mark)
            cli.wait(timeout=10)
            out.close()
    assert marked_pids(mark) == []


@pytest.mark.parametrize("name", clis.NAMES)
def test_server_error_fails_the_run(name: str, tmp_path: Path, mark: str) -> None:
    """A 500 from the API makes the CLI exit non-zero and report the failure in its JSON."""
    clis.require_cli(name)
    with FakeModelAPI(Error(500, "fake error 500")) as api:
        ran = run_cli(name, api, tmp_path, mark, "say done")
    assert ran.returncode != 0
    events = json_lines(ran.stdout)
    if name == "claude":
        result = last_of(events, "result")
        assert (result["is_error"], result["api_error_status"]) == (True, 500)
    elif name == "codex":
        assert last_of(events, "turn.failed")["error"]["message"]
    else:
        assert ran.returncode == 500 % 256
        assert last_of(events, "result")["status"] == "error"


# --- the fake itself, in-process (no CLI needed) --------------------------------------------


def post(url: str, body: dict[str, Any]) -> tuple[int, str]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def sse_data(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[len("data: "):]) for line in text.splitlines()
            if line.startswith("data: ")]


def test_script_advances_on_turns_only_and_repeats_its_last_reply() -> None:
    """Turn requests (with tools) take the script in order and then repeat its last reply;
    side calls (no tools) take nothing from it and report no usage."""
    turn = {"model": "m", "stream": True, "tools": [{"name": "Bash"}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi there"}]}]}
    side = {"model": "small", "stream": False, "messages": [{"role": "user", "content": "title?"}]}
    with FakeModelAPI(Error(500, "first"), Reply("second", USAGE)) as api:
        url = f"{api.url}/v1/messages"
        assert post(url, turn)[0] == 500
        status, text = post(url, side)
        assert status == 200 and json.loads(text)["usage"]["input_tokens"] == 0
        for _ in range(2):
            events = sse_data(post(url, turn)[1])
            deltas = [e["delta"]["text"] for e in events if e["type"] == "content_block_delta"]
            assert "".join(deltas) == "second"
            assert events[-2]["usage"]["input_tokens"] == 1000
    assert len(api.turns) == 3 and len(api.requests) == 4
    assert api.prompts() == ["hi there", "title?"]


def text_deltas(events: list[dict[str, Any]]) -> list[str]:
    """The streamed text pieces, whichever of the three APIs sent `events`."""
    pieces = []
    for event in events:
        if event.get("type") == "content_block_delta":
            pieces.append(event["delta"]["text"])
        elif event.get("type") == "response.output_text.delta":
            pieces.append(event["delta"])
        elif "candidates" in event:
            pieces += [part["text"] for part in event["candidates"][0]["content"]["parts"]]
    return pieces


def test_each_api_streams_a_slow_reply_word_by_word() -> None:
    """A `Slow` reply reaches each API's stream as one text piece per word."""
    calls: dict[str, dict[str, Any]] = {
        "/v1/messages": {"stream": True, "tools": [{"name": "Bash"}], "messages": []},
        "/v1/responses": {"stream": True, "tools": [{"type": "function", "name": "shell"}],
                          "input": []},
        "/v1beta/models/g:streamGenerateContent": {
            "tools": [{"functionDeclarations": [{"name": "run_shell_command"}]}],
            "contents": []},
    }
    with FakeModelAPI(Slow("one two three", 0.01, USAGE)) as api:
        for path, body in calls.items():
            status, text = post(api.url + path, body)
            assert status == 200
            assert text_deltas(sse_data(text)) == ["one ", "two ", "three"], path
