"""Usage readers against what real agent CLIs printed (tests/data/agent-cli-samples, runs
against a fake model API that answers every call with 1000 prompt tokens of which 200 cached,
30 cache writes where the API has them, and 7 output tokens of which 3 reasoning)."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aq.core.prices import Price, parse_prices, priced
from aq.core.usage import Usage
from aq.errors import ConfigError
from aq.infra.usage.reader import UsageReader
from aq.infra.usage.registry import READERS, reader_for

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "agent-cli-samples"


def feed(reader: UsageReader, *samples: str) -> Usage | None:
    for sample in samples:
        for line in (SAMPLES / sample).read_text(encoding="utf-8").splitlines(keepends=True):
            reader.feed(line)
    return reader.usage


def read(name: str, *samples: str) -> Usage | None:
    return feed(reader_for(name), *samples)


def lines(*events: dict[str, object]) -> list[str]:
    return [json.dumps(event) + "\n" for event in events]


# --- the registry ---------------------------------------------------------------------------


def test_readers_are_registered_by_the_names_engines_use() -> None:
    """READERS holds a reader for each CLI with machine-readable usage, keyed by its name."""
    assert set(READERS) == {"claude-json", "codex-json", "gemini-json", "aider-analytics",
                            "copilot-json", "opencode-json", "qwen-json", "cursor-json",
                            "amp-json", "goose-json"}
    assert all(reader.name == name for name, reader in READERS.items())
    assert {name for name, reader in READERS.items() if reader.side_file} == {
        "aider-analytics", "copilot-json"}


def test_reader_for_gives_a_fresh_reader_each_time() -> None:
    """Two readers of one format share no state."""
    first, second = reader_for("codex-json"), reader_for("codex-json")
    feed(first, "codex-json.jsonl")
    assert first.usage is not None and second.usage is None


def test_reader_for_an_unknown_name_names_the_known_ones() -> None:
    """An unknown reader name is a ValueError listing the readers there are."""
    with pytest.raises(ValueError, match=r"'nope' is not a usage reader; known: aider-analytics, "):
        reader_for("nope")


# --- claude ---------------------------------------------------------------------------------


def test_claude_json_result() -> None:
    """--output-format json: the one result gives tokens, cost, model, session and turns."""
    assert read("claude-json", "claude-json.stdout") == Usage(
        input_tokens=1000, output_tokens=7, cache_read_tokens=200, cache_write_tokens=30,
        cost_usd=0.0054625, models=("claude-opus-4-8[1m]",),
        session="aea614d8-19be-4243-a3d9-601be1cc503d", turns=1, permission_denials=0)


def test_claude_stream_json_ends_with_the_result_figures() -> None:
    """stream-json: the final result's figures are the run's."""
    assert read("claude-json", "claude-stream-json.jsonl") == Usage(
        input_tokens=1000, output_tokens=7, cache_read_tokens=200, cache_write_tokens=30,
        cost_usd=0.0054625, models=("claude-opus-4-8[1m]",),
        session="9429e176-e89c-4173-b00a-ab69cefa4aa5", turns=1, permission_denials=0)


def test_claude_running_figure_rises_while_the_stream_is_fed() -> None:
    """Line by line: the init gives the session, the assistant message its usage, the result
    the final figures."""
    reader = reader_for("claude-json")
    seen = []
    for line in (SAMPLES / "claude-stream-json.jsonl").read_text().splitlines():
        reader.feed(line)
        seen.append(reader.usage)
    init, message, result = seen
    assert init == Usage(session="9429e176-e89c-4173-b00a-ab69cefa4aa5")
    assert message is not None and result is not None
    assert (message.input_tokens, message.output_tokens, message.cache_read_tokens,
            message.cache_write_tokens, message.models, message.cost_usd) == (
        1000, 1, 200, 30, ("claude-opus-4-8",), None)
    assert message.tokens == 1231 and result.tokens == 1237
    assert result.output_tokens == 7 and result.cost_usd == 0.0054625


def test_claude_model_usage_with_side_calls_wins_over_usage() -> None:
    """With a tool call, `usage` says 2000 in but `modelUsage` (which counts the side calls)
    3000: modelUsage is the figure."""
    for sample in ("claude-tool-yolo.json", "claude-tool-noyolo.json"):
        usage = read("claude-json", sample)
        assert usage is not None
        assert (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens,
                usage.cache_write_tokens, usage.cost_usd, usage.turns) == (
            3000, 21, 600, 90, 0.0163875, 2)


def test_claude_counts_permission_denials() -> None:
    """Without yolo the denied Bash call is counted; with yolo there is none."""
    noyolo, yolo = read("claude-json", "claude-tool-noyolo.json"), read("claude-json", "claude-tool-yolo.json")
    assert noyolo is not None and noyolo.permission_denials == 1 and noyolo.cli_error is None
    assert yolo is not None and yolo.permission_denials == 0


@pytest.mark.parametrize(("sample", "error"), [
    ("claude-401.json", "is_error: Failed to authenticate. API Error: 401 fake error 401"),
    ("claude-500.json", "is_error: API Error: 500 fake error 500. This is a server-side issue, "
                        "usually temporary — try again in a moment. If it persists, check your "
                        "inference gateway (127.0.0.1:18084)."),
])
def test_claude_api_error_is_a_cli_error(sample: str, error: str) -> None:
    """An API error comes as subtype success with is_error true: cli_error says so, with its
    text, and the zero tokens and cost are as reported."""
    usage = read("claude-json", sample)
    assert usage is not None
    assert usage.cli_error == error
    assert (usage.input_tokens, usage.output_tokens, usage.cost_usd, usage.models) == (0, 0, 0.0, ())


def test_claude_max_budget_is_a_cli_error_with_the_model_usage() -> None:
    """error_max_budget_usd is the cli_error; its `usage` is all zeros but modelUsage has the
    call's tokens, which count."""
    assert read("claude-json", "claude-max-budget.json") == Usage(
        input_tokens=1000, output_tokens=7, cache_read_tokens=200, cache_write_tokens=30,
        cost_usd=0.0054625, models=("claude-opus-4-8[1m]",),
        session="23903c5b-615e-40ed-b54a-e06f9f9bcf3d", turns=1, cli_error="error_max_budget_usd",
        permission_denials=0)


def test_claude_killed_mid_run_keeps_the_partial_figure() -> None:
    """Killed before its result, claude leaves the assistant message's usage and the session."""
    assert read("claude-json", "claude-kill.stdout") == Usage(
        input_tokens=1000, output_tokens=1, cache_read_tokens=200, cache_write_tokens=30,
        models=("claude-opus-4-8",), session="34375253-d713-486e-b766-87f948c866d1")


def test_claude_message_repeated_per_content_block_counts_once() -> None:
    """claude prints a message once per content block with the same id and usage: counted once;
    a new id adds."""
    reader = reader_for("claude-json")
    message = {"id": "msg_1", "model": "m", "usage": {"input_tokens": 10, "output_tokens": 2}}
    for line in lines({"type": "assistant", "message": message}, {"type": "assistant", "message": message}):
        reader.feed(line)
    assert reader.usage is not None and reader.usage.tokens == 12
    reader.feed(json.dumps({"type": "assistant", "message": {**message, "id": "msg_2"}}))
    assert reader.usage is not None and reader.usage.tokens == 24


def test_amp_stream_json_tokens_come_from_the_messages() -> None:
    """amp -x --stream-json (its makers' example): no usage in the result, so the assistant
    messages' Anthropic usage stands; session is the thread id."""
    reader = reader_for("amp-json")
    for line in lines(
        {"type": "system", "subtype": "init", "cwd": "/w", "session_id": "T-1", "tools": []},
        {"type": "assistant", "message": {"type": "message", "role": "assistant", "content": [],
                                          "stop_reason": "end_turn",
                                          "usage": {"input_tokens": 7, "cache_creation_input_tokens": 3,
                                                    "cache_read_input_tokens": 14009, "output_tokens": 13}},
         "parent_tool_use_id": None, "session_id": "T-1"},
        {"type": "result", "subtype": "success", "duration_ms": 2442, "is_error": False,
         "num_turns": 1, "result": "4", "session_id": "T-1"},
    ):
        reader.feed(line)
    assert reader.usage == Usage(input_tokens=7, output_tokens=13, cache_read_tokens=14009,
                                 cache_write_tokens=3, session="T-1", turns=1)


def test_cursor_result_with_camel_case_usage() -> None:
    """cursor-agent's result (claude-like) may carry camelCase usage; is_error gives cli_error."""
    reader = reader_for("cursor-json")
    reader.feed(json.dumps({"type": "result", "subtype": "success", "is_error": True, "result": "boom",
                            "session_id": "s", "usage": {"inputTokens": 26967, "outputTokens": 35,
                                                         "cacheReadTokens": 2654, "cacheWriteTokens": 0}}))
    assert reader.usage == Usage(input_tokens=26967, output_tokens=35, cache_read_tokens=2654,
                                 cache_write_tokens=0, session="s", cli_error="is_error: boom")


# --- codex ----------------------------------------------------------------------------------


def test_codex_turn_completed_takes_cached_input_out_of_input() -> None:
    """codex counts cached tokens inside input_tokens (1000 with 200 cached): input is 800."""
    assert read("codex-json", "codex-json.jsonl") == Usage(
        input_tokens=800, output_tokens=7, cache_read_tokens=200, cache_write_tokens=0,
        reasoning_tokens=3, session="01a2422b-b590-75a2-888e-61ca291e2836", turns=1)


@pytest.mark.parametrize("sample", ["codex-tool-yolo.jsonl", "codex-tool-noyolo.jsonl"])
def test_codex_tool_runs(sample: str) -> None:
    """A run with a tool call: two model calls in one turn."""
    usage = read("codex-json", sample)
    assert usage is not None
    assert (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens, usage.reasoning_tokens,
            usage.turns, usage.cli_error) == (1600, 14, 400, 6, 1, None)


def test_codex_reconnect_errors_are_not_failures() -> None:
    """Reconnecting... errors before a completed turn leave no cli_error."""
    usage = read("codex-json", "codex-json-openaibase.jsonl")
    assert usage is not None and usage.cli_error is None and usage.input_tokens == 800
    hung = read("codex-json", "codex-json-envbase.jsonl")
    assert hung == Usage(session="01a24229-80ef-75b1-93cc-fce810986233")


@pytest.mark.parametrize(("sample", "error"), [
    ("codex-401.jsonl", "turn.failed: unexpected status 401 Unauthorized: fake error 401, "
                        "url: http://127.0.0.1:18095/v1/responses"),
    ("codex-500.jsonl", "turn.failed: We\u2019re currently experiencing high demand, which may cause "
                        "temporary errors."),
])
def test_codex_turn_failed_is_a_cli_error(sample: str, error: str) -> None:
    """turn.failed gives the cli_error; there are no tokens."""
    usage = read("codex-json", sample)
    assert usage is not None and usage.cli_error == error and usage.tokens is None


def test_codex_killed_leaves_the_thread_id() -> None:
    """Killed mid-tool, codex printed only the thread id: enough to resume."""
    assert read("codex-json", "codex-kill.stdout") == Usage(session="01a2422c-9d41-78d3-bfb9-98417a7448f0")


def test_codex_resume_reports_the_thread_total_and_minus_gives_the_run() -> None:
    """On exec resume codex reports the thread's running total (3000 in); minus the first
    run's figures it is the second run's (2000 in)."""
    first = read("codex-json", "codex-json.jsonl")
    total = read("codex-json", "codex-resume2.jsonl")
    assert first is not None and total is not None and total.session == first.session
    assert (total.input_tokens, total.output_tokens, total.cache_read_tokens, total.reasoning_tokens) == (
        2400, 21, 600, 9)
    run = total.minus(first)
    assert (run.input_tokens, run.output_tokens, run.cache_read_tokens, run.cache_write_tokens,
            run.reasoning_tokens, run.session, run.turns) == (1600, 14, 400, 0, 6, total.session, 1)


def test_codex_completed_turn_clears_an_earlier_error() -> None:
    """A top-level error is a cli_error until a turn completes after it."""
    reader = reader_for("codex-json")
    reader.feed(json.dumps({"type": "error", "message": "stream broke"}))
    assert reader.usage is not None and reader.usage.cli_error == "error: stream broke"
    reader.feed(json.dumps({"type": "turn.completed", "usage": {"input_tokens": 5, "output_tokens": 1}}))
    assert reader.usage == Usage(input_tokens=5, output_tokens=1, turns=1)


# --- gemini ---------------------------------------------------------------------------------


GEMINI_ONE_CALL_EACH = Usage(input_tokens=1600, output_tokens=20, cache_read_tokens=400,
                             reasoning_tokens=6, models=("gemini-3.5-flash-lite", "gemini-3.8-flash"))


def test_gemini_json_document_over_many_lines() -> None:
    """json mode pretty-prints one document: gathered, its per-model stats summed (input is
    prompt - cached, output candidates + thoughts)."""
    assert read("gemini-json", "gemini-json.stdout") == replace(
        GEMINI_ONE_CALL_EACH, session="13664c71-4868-4876-bc4a-aeb7f40c142e")


def test_gemini_stream_json_gives_the_same_figures_as_json() -> None:
    """stream-json's result stats (no thoughts; output = total - prompt) agree with json mode."""
    assert read("gemini-json", "gemini-stream-json.jsonl") == replace(
        GEMINI_ONE_CALL_EACH, session="4b6726e0-7a4e-43f0-8ab1-adf1fe46cea7")


def test_gemini_tool_runs() -> None:
    """With yolo the main model is called twice; without, the tool is never offered."""
    yolo, noyolo = read("gemini-json", "gemini-tool-yolo.json"), read("gemini-json", "gemini-tool-noyolo.json")
    assert yolo is not None and noyolo is not None
    assert (yolo.input_tokens, yolo.output_tokens, yolo.cache_read_tokens, yolo.reasoning_tokens) == (
        2400, 30, 600, 9)
    assert (noyolo.input_tokens, noyolo.output_tokens, noyolo.cache_read_tokens) == (1600, 20, 400)


def test_gemini_killed_leaves_the_session() -> None:
    """Killed mid-tool, gemini printed its init: the session, no tokens."""
    assert read("gemini-json", "gemini-kill.stdout") == Usage(session="08a7449a-57f4-4de5-8797-88c7e4ab73a6")


@pytest.mark.parametrize(("sample", "session", "error"), [
    ("gemini-401.stderr", "83c30cac-dfa5-4442-8ab0-1c7c53d854a3", "error: fake error 401 (code 401)"),
    ("gemini-500.stderr", "da3129e7-3c8c-4e9a-aad2-39c9c9eae924", "error: fake error 500 (code 500)"),
])
def test_gemini_error_document_on_stderr(sample: str, session: str, error: str) -> None:
    """json mode's error document goes to stderr (stdout is empty): fed stderr, the reader finds
    it among the stack traces and unwraps the API's own message."""
    assert read("gemini-json", "gemini-401.json") is None
    assert read("gemini-json", sample) == Usage(session=session, cli_error=error)


def test_gemini_stream_errors() -> None:
    """stream-json: an error event of severity error, or a result with status error, is a
    cli_error; a warning is not."""
    reader = reader_for("gemini-json")
    reader.feed(json.dumps({"type": "error", "severity": "warning", "message": "slow"}))
    assert reader.usage is None
    reader.feed(json.dumps({"type": "result", "status": "error",
                            "error": {"type": "FatalTurnLimitedError", "message": "too many turns"}}))
    assert reader.usage == Usage(cli_error="error: too many turns")
    bare = reader_for("gemini-json")
    bare.feed(json.dumps({"type": "result", "status": "error"}))
    assert bare.usage == Usage(cli_error="error: no detail")


def test_gemini_truncated_document_is_dropped() -> None:
    """A pretty-printed document cut off by a kill, then a new one: only the whole one counts."""
    text = (SAMPLES / "gemini-json.stdout").read_text().splitlines()
    reader = reader_for("gemini-json")
    for line in text[:20] + text:
        reader.feed(line)
    assert reader.usage is not None and reader.usage.input_tokens == 1600


# --- aider ----------------------------------------------------------------------------------


@pytest.mark.parametrize("sample", ["aider-analytics.jsonl", "aider-analytics2.jsonl"])
def test_aider_analytics_log(sample: str) -> None:
    """The analytics log's message_send gives the exact counts and cost (its model name is
    redacted by aider, so none is kept)."""
    reader = reader_for("aider-analytics")
    reader.read_file(SAMPLES / sample)
    assert reader.usage == Usage(input_tokens=1000, output_tokens=7, cost_usd=0.0023200000000000004,
                                 turns=1)


def test_aider_stdout_is_not_read() -> None:
    """aider's stdout summary is not a source: streaming miscounts it (2.4k sent, 1 received,
    against the API's 1000 and 7), hence --no-stream and the analytics log."""
    assert "Tokens: 2.4k sent, 1 received." in (SAMPLES / "aider-stream.stdout").read_text()
    assert "Tokens: 1.0k sent, 7 received." in (SAMPLES / "aider-nostream.stdout").read_text()
    for sample in ("aider-stream.stdout", "aider-nostream.stdout", "aider-kill.stdout", "aider.stdout"):
        assert read("aider-analytics", sample) is None


def test_aider_log_appended_by_a_second_run_counts_the_latest(tmp_path: Path) -> None:
    """The log is appended to: a `launched` event starts the count again."""
    log = tmp_path / "analytics.jsonl"
    log.write_text((SAMPLES / "aider-analytics.jsonl").read_text()
                   + (SAMPLES / "aider-analytics2.jsonl").read_text())
    reader = reader_for("aider-analytics")
    reader.read_file(log)
    reader.read_file(log)  # read again (as the run ends): the same figure, not twice it
    assert reader.usage is not None and (reader.usage.input_tokens, reader.usage.turns) == (1000, 1)


def test_aider_calls_are_summed_and_an_exception_is_a_cli_error(tmp_path: Path) -> None:
    """Two model calls add up; message_send_exception gives the cli_error; a known model is kept."""
    log = tmp_path / "analytics.jsonl"
    send = {"event": "message_send", "properties": {"main_model": "gpt-4o", "prompt_tokens": 10,
                                                    "completion_tokens": 2, "cost": 0.5}}
    log.write_text("".join(lines(send, send, {"event": "message_send_exception",
                                             "properties": {"exception": "RateLimitError\nmore"}})))
    reader = reader_for("aider-analytics")
    reader.read_file(log)
    assert reader.usage == Usage(input_tokens=20, output_tokens=4, cost_usd=1.0, models=("gpt-4o",),
                                 turns=2, cli_error="message_send_exception: RateLimitError")


def test_aider_missing_or_garbage_log_changes_nothing(tmp_path: Path) -> None:
    """No log, or one of random bytes, leaves the reader as it was, without raising."""
    reader = reader_for("aider-analytics")
    reader.read_file(tmp_path / "missing.jsonl")
    assert reader.usage is None
    (tmp_path / "garbage").write_bytes(bytes(range(256)) * 100)
    reader.read_file(tmp_path / "garbage")
    reader.read_file(tmp_path)  # a directory
    assert reader.usage is None


# --- copilot --------------------------------------------------------------------------------


def test_copilot_stdout_and_usage_file() -> None:
    """stdout gives session, turns and denials; the usage file the tokens, whose inputTokens
    (1000) include the 200 cache reads."""
    reader = reader_for("copilot-json")
    feed(reader, "copilot-json.jsonl")
    reader.read_file(SAMPLES / "copilot-usage.json")
    assert reader.usage == Usage(
        input_tokens=800, output_tokens=7, cache_read_tokens=200, cache_write_tokens=0,
        models=("gpt-fake",), session="f0984584-6818-4ea1-9741-96b84249581a", turns=1,
        permission_denials=0)


def test_copilot_counts_denied_tool_calls() -> None:
    """Without --allow-all-tools the denied bash call is counted; two turns either way."""
    noyolo, yolo = read("copilot-json", "copilot-tool-noyolo.jsonl"), read("copilot-json", "copilot-tool-yolo.jsonl")
    assert noyolo is not None and (noyolo.permission_denials, noyolo.turns) == (1, 2)
    assert yolo is not None and (yolo.permission_denials, yolo.turns) == (0, 2)


def test_copilot_abort_is_a_cli_error() -> None:
    """Killed, copilot prints abort and still a result with exitCode 0: the abort is the signal."""
    usage = read("copilot-json", "copilot-kill.stdout")
    assert usage is not None
    assert (usage.cli_error, usage.session, usage.tokens) == (
        "abort: user_initiated", "98c8c7e1-9b07-41ab-a340-6a8989ec6301", None)


def test_copilot_running_figure_and_errors() -> None:
    """assistant.usage events give a running figure (input without cache); a failing exit code
    and session.error give cli_error."""
    reader = reader_for("copilot-json")
    usage_event = {"type": "assistant.usage", "data": {"model": "claude-x", "inputTokens": 100,
                                                        "outputTokens": 5, "cacheReadTokens": 60,
                                                        "cacheWriteTokens": 10}}
    for line in lines(usage_event, usage_event):
        reader.feed(line)
    assert reader.usage == Usage(input_tokens=60, output_tokens=10, cache_read_tokens=120,
                                 cache_write_tokens=20, models=("claude-x",))
    reader.feed(json.dumps({"type": "result", "sessionId": "s", "exitCode": 1}))
    assert reader.usage is not None and reader.usage.cli_error == "exitCode: 1"
    other = reader_for("copilot-json")
    other.feed(json.dumps({"type": "session.error", "data": {"errorType": "x", "message": "quota"}}))
    assert other.usage == Usage(cli_error="session.error: quota")


def test_copilot_missing_or_garbage_usage_file_changes_nothing(tmp_path: Path) -> None:
    """A usage file that is missing, not JSON or of another shape leaves the stdout figures."""
    reader = reader_for("copilot-json")
    before = feed(reader, "copilot-json.jsonl")
    (tmp_path / "bad.json").write_text('{"modelMetrics": ')
    (tmp_path / "list.json").write_text("[1, 2]")
    for path in (tmp_path / "missing.json", tmp_path / "bad.json", tmp_path / "list.json"):
        reader.read_file(path)
    assert reader.usage == before


# --- opencode -------------------------------------------------------------------------------


def test_opencode_step_finish() -> None:
    """One step: its tokens (input already without cache) and cost."""
    assert read("opencode-json", "opencode-json.jsonl") == Usage(
        input_tokens=1000, output_tokens=7, cache_read_tokens=200, cache_write_tokens=30,
        reasoning_tokens=0, cost_usd=0.0032775, session="ses_dbdd015e9ffeFy3uhra65U2e4b", turns=1)


@pytest.mark.parametrize("sample", ["opencode-tool-yolo.jsonl", "opencode-tool-noyolo.jsonl"])
def test_opencode_steps_are_summed(sample: str) -> None:
    """A tool call makes two steps: tokens and cost summed."""
    usage = read("opencode-json", sample)
    assert usage is not None
    assert (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens,
            usage.cache_write_tokens, usage.turns) == (2000, 14, 400, 60, 2)
    assert usage.cost_usd == pytest.approx(0.006555)


def test_opencode_running_figure_rises_per_step() -> None:
    """Each step_finish adds to the figure as it streams."""
    reader = reader_for("opencode-json")
    totals = []
    for line in (SAMPLES / "opencode-tool-yolo.jsonl").read_text().splitlines():
        reader.feed(line)
        totals.append(reader.usage.tokens if reader.usage else None)
    assert totals == [None, None, 1237, 1237, 1237, 2474]


def test_opencode_killed_and_error() -> None:
    """Killed at its first step it leaves the session; an error event is a cli_error; reasoning
    reported apart is added to output."""
    assert read("opencode-json", "opencode-kill.stdout") == Usage(session="ses_dbdcfa9e6ffeCrOWXGPm7ZJP71")
    reader = reader_for("opencode-json")
    for line in lines(
        {"type": "step_finish", "sessionID": "s", "part": {"tokens": {"input": 1, "output": 2, "reasoning": 3}}},
        {"type": "error", "sessionID": "s", "error": {"name": "APIError", "data": {"message": "401"}}},
    ):
        reader.feed(line)
    assert reader.usage == Usage(input_tokens=1, output_tokens=5, reasoning_tokens=3, session="s",
                                 turns=1, cli_error="error: 401")


# --- qwen -----------------------------------------------------------------------------------


def test_qwen_json_array() -> None:
    """json mode prints one array; its result usage (2000 in, with the side call) includes the
    400 cache reads, taken out."""
    assert read("qwen-json", "qwen-json.stdout") == Usage(
        input_tokens=1600, output_tokens=14, cache_read_tokens=400, reasoning_tokens=0,
        models=("gpt-fake",), session="3c50016f-9382-44dd-be66-bb556687bbd3", turns=1,
        permission_denials=0)


def test_qwen_killed_stream_keeps_the_message_usage() -> None:
    """Killed mid-tool, stream-json leaves the assistant message's usage."""
    assert read("qwen-json", "qwen-kill.stdout") == Usage(
        input_tokens=800, output_tokens=7, cache_read_tokens=200, models=("gpt-fake",),
        session="223ca0ff-fe7b-4e4f-8dbf-d2281f96a32f")


def test_qwen_error_result_and_thoughts() -> None:
    """An error result names its subtype and message; thoughts in stats are added to output."""
    reader = reader_for("qwen-json")
    reader.feed(json.dumps({
        "type": "result", "subtype": "error_during_execution", "is_error": True, "session_id": "q",
        "usage": {"input_tokens": 50, "output_tokens": 5, "cache_read_input_tokens": 20},
        "error": {"message": "Model stream ended"},
        "stats": {"models": {"qwen3": {"tokens": {"thoughts": 4}}}}}))
    assert reader.usage == Usage(input_tokens=30, output_tokens=9, cache_read_tokens=20,
                                 reasoning_tokens=4, models=("qwen3",), session="q",
                                 cli_error="error_during_execution: Model stream ended")


# --- goose ----------------------------------------------------------------------------------


def test_goose_stream_json_models_and_errors() -> None:
    """goose's stream-json gives the models and an error; its lone total_tokens is not split."""
    reader = reader_for("goose-json")
    for line in lines({"type": "model_change", "model": "gpt-4o", "mode": "auto"},
                      {"type": "message", "message": {"role": "assistant", "content": []}},
                      {"type": "error", "error": "provider said 401"},
                      {"type": "complete", "total_tokens": 1234}):
        reader.feed(line)
    assert reader.usage == Usage(models=("gpt-4o",), cli_error="error: provider said 401")


# --- garbage never raises -------------------------------------------------------------------

VOCABULARY = ["type", "event", "subtype", "usage", "message", "modelUsage", "stats", "models",
              "tokens", "part", "data", "properties", "error", "session_id", "sessionID",
              "sessionId", "thread_id", "input_tokens", "output_tokens", "cached_input_tokens",
              "cache_read_input_tokens", "cache_creation_input_tokens", "inputTokens",
              "outputTokens", "cacheReadTokens", "cacheWriteTokens", "cacheReadInputTokens",
              "total_tokens", "cached", "input", "prompt", "candidates", "thoughts",
              "total_cost_usd", "costUSD", "cost", "num_turns", "permission_denials", "is_error",
              "result", "errors", "status", "severity", "id", "model", "modelMetrics",
              "prompt_tokens", "completion_tokens", "main_model", "exitCode", "code", "reasoning",
              "cache", "read", "write", "reasoning_output_tokens", "exception", "reason", "name"]
EVENT_TYPES = ["assistant", "result", "system", "thread.started", "turn.completed", "turn.failed",
               "error", "init", "step_finish", "message_send", "launched",
               "message_send_exception", "assistant.usage", "assistant.message",
               "assistant.turn_start", "tool.execution_complete", "session.error", "abort",
               "model_change", "success", "denied", "Reconnecting... 1/5"]
LEAVES = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
          | st.floats() | st.text(max_size=30) | st.sampled_from(EVENT_TYPES))
JSON_VALUES = st.recursive(
    LEAVES, lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(VOCABULARY) | st.text(max_size=4), inner, max_size=6),
    max_leaves=25)
EVENTS = st.dictionaries(st.sampled_from(VOCABULARY), JSON_VALUES, max_size=8)
READER_NAMES = sorted(READERS)


def assert_sane(usage: Usage | None) -> None:
    """Counts whole and not negative, cost finite, texts one short line, pricing finite."""
    if usage is None:
        return
    for name in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
                 "reasoning_tokens", "turns", "permission_denials"):
        value = getattr(usage, name)
        assert value is None or (type(value) is int and value >= 0), (name, value)
    assert usage.cost_usd is None or (math.isfinite(usage.cost_usd) and usage.cost_usd >= 0)
    for text in (usage.session, usage.cli_error, *usage.models):
        assert text is None or (isinstance(text, str) and text and "\n" not in text and len(text) <= 200)
    assert len(usage.models) <= 32
    cost = priced(usage, {model: Price(3, 15) for model in usage.models}).cost_usd
    assert cost is None or math.isfinite(cost)


def feed_every_reader(text_lines: list[str]) -> None:
    """Each line to a fresh reader of every format, also without feed's backstop."""
    for name in READER_NAMES:
        reader = reader_for(name)
        for line in text_lines:
            reader._feed(line)  # the parsing itself: it must not raise either
            reader.feed(line)
        assert_sane(reader.usage)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text() | st.binary().map(lambda raw: raw.decode("utf-8", errors="replace")),
                max_size=6))
def test_arbitrary_text_lines_never_raise(text_lines: list[str]) -> None:
    """Any text, random bytes included, is skipped without an exception and leaves the usage
    None or sane."""
    feed_every_reader(text_lines)


@settings(max_examples=200, deadline=None)
@given(st.lists(JSON_VALUES | EVENTS, max_size=6))
def test_arbitrary_json_values_never_raise(values: list[object]) -> None:
    """Any JSON value on a line (numbers, strings, arrays, events of the right keys with wrong
    types, negative, huge, nan) is survived, leaving the usage None or sane."""
    feed_every_reader([json.dumps(value) for value in values])


SAMPLE_FILES = [path for path in sorted(SAMPLES.iterdir()) if path.suffix in (".jsonl", ".json", ".stdout")]


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_real_events_with_values_swapped_never_raise(data: st.DataObject) -> None:
    """The samples' own events with any value replaced by an arbitrary one are survived."""
    sample = data.draw(st.sampled_from(SAMPLE_FILES))
    text_lines = []
    for line in sample.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:  # a line of a pretty-printed document, or text
            event = None
        if isinstance(event, dict) and event:
            key = data.draw(st.sampled_from(sorted(event)))
            event[key] = data.draw(JSON_VALUES)
            line = json.dumps(event)
        text_lines.append(line)
    feed_every_reader(text_lines)


@pytest.mark.parametrize("name", READER_NAMES)
def test_very_long_lines(name: str) -> None:
    """Lines of megabytes (text, broken JSON, valid JSON, deep nesting) are read or skipped."""
    reader = reader_for(name)
    big = "x" * 5_000_000
    for line in (big, "{" + big, "[" * 200_000, '{"a": "' + big + '"}',
                 json.dumps({"type": "assistant", "session_id": "s",
                             "message": {"id": "m", "content": big, "usage": {"input_tokens": 5}}})):
        reader._feed(line)
    assert_sane(reader.usage)
    if name in ("claude-json", "amp-json", "cursor-json", "qwen-json"):
        assert reader.usage is not None and reader.usage.input_tokens == 5


@pytest.mark.parametrize("name", ["aider-analytics", "copilot-json"])
@settings(max_examples=40, deadline=None)
@given(raw=st.binary(max_size=2000) | JSON_VALUES.map(lambda value: json.dumps(value).encode()))
def test_side_files_of_garbage_never_raise(name: str, raw: bytes, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A side file of random bytes or of any JSON value is survived."""
    path = tmp_path_factory.mktemp("side") / "usage"
    path.write_bytes(raw)
    reader = reader_for(name)
    reader.read_file(path)
    assert_sane(reader.usage)


def test_out_of_range_numbers_are_ignored() -> None:
    """Negative, fractional, boolean, non-finite and absurdly large counts are not counts."""
    reader = reader_for("codex-json")
    reader.feed('{"type":"turn.completed","usage":{"input_tokens":-5,"cached_input_tokens":1.5,'
                '"output_tokens":1e300,"reasoning_output_tokens":true,"cache_write_input_tokens":NaN}}')
    assert reader.usage == Usage(turns=1)
    reader.feed('{"type":"turn.completed","usage":{"input_tokens":' + "9" * 5000 + "}}")
    assert reader.usage == Usage(turns=1)  # more digits than Python converts: the line is skipped
    reader.feed('{"type":"turn.completed","usage":{"input_tokens":7.0}}')
    assert reader.usage == Usage(input_tokens=7, turns=2)


# --- Usage ----------------------------------------------------------------------------------


def test_tokens_sums_input_output_and_cache() -> None:
    """tokens is input + output + cache read + cache write (reasoning is inside output)."""
    assert Usage(input_tokens=1, output_tokens=2, cache_read_tokens=3, cache_write_tokens=4,
                 reasoning_tokens=100).tokens == 10
    assert Usage(output_tokens=2).tokens == 2
    assert Usage(cost_usd=1.0).tokens is None


def test_to_event_holds_only_known_fields() -> None:
    """to_event leaves out what is unknown and lists the models."""
    assert Usage().to_event() == {}
    assert Usage(input_tokens=0, cost_usd=0.0, models=("a", "b"), session="s").to_event() == {
        "input_tokens": 0, "cost_usd": 0.0, "models": ["a", "b"], "session": "s"}
    full = Usage(1, 2, 3, 4, 5, 0.5, ("m",), "s", 6, "e", 7)
    assert list(full.to_event()) == [
        "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
        "reasoning_tokens", "cost_usd", "models", "session", "turns", "cli_error",
        "permission_denials"]
    assert Usage.from_event(full.to_event()) == full


def test_from_event_ignores_bad_types() -> None:
    """from_event keeps the fields of the right type and drops the rest; nothing usable is None."""
    assert Usage.from_event({"input_tokens": "12", "output_tokens": 3, "cost_usd": "1",
                             "models": ["a", 1, None, "a"], "session": 5, "turns": -1,
                             "cli_error": "boom\ntrace"}) == Usage(
        output_tokens=3, models=("a",), cli_error="boom")
    for raw in (None, [], "x", 1, {}, {"input_tokens": None}, {"cost_usd": math.inf}):
        assert Usage.from_event(raw) is None


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(["input_tokens", "output_tokens", "cache_read_tokens",
                                        "cache_write_tokens", "reasoning_tokens", "cost_usd",
                                        "models", "session", "turns", "cli_error",
                                        "permission_denials", "other"]), JSON_VALUES))
def test_from_event_round_trips(raw: dict[str, object]) -> None:
    """Whatever from_event makes of a value, to_event gives it back unchanged."""
    usage = Usage.from_event(raw)
    assert usage is None or Usage.from_event(usage.to_event()) == usage
    assert_sane(usage)


def test_minus_subtracts_tokens_never_below_zero() -> None:
    """minus takes the earlier total's tokens and cost off; never below 0; unknowns stay."""
    total = Usage(input_tokens=100, output_tokens=5, cache_read_tokens=10, cost_usd=2.0,
                  session="s", turns=1, models=("m",))
    earlier = Usage(input_tokens=40, output_tokens=9, cache_write_tokens=3, cost_usd=0.5)
    assert total.minus(earlier) == Usage(input_tokens=60, output_tokens=0, cache_read_tokens=10,
                                         cost_usd=1.5, session="s", turns=1, models=("m",))
    assert total.minus(Usage()) == total


# --- prices ---------------------------------------------------------------------------------


def test_priced_fills_a_missing_cost_from_the_price_table() -> None:
    """Tokens times the price per million, cache reads and writes at their own price."""
    usage = Usage(input_tokens=800, output_tokens=7, cache_read_tokens=200, cache_write_tokens=100,
                  models=("gpt-x",))
    result = priced(usage, {"gpt-x": Price(input=1.25, output=10, cache_read=0.125, cache_write=2)})
    assert result.cost_usd == pytest.approx((800 * 1.25 + 7 * 10 + 200 * 0.125 + 100 * 2) / 1e6)
    assert result.tokens == usage.tokens


def test_priced_charges_cache_as_input_without_cache_prices() -> None:
    """A price without cache rates charges cache reads and writes as input."""
    usage = Usage(input_tokens=1, cache_read_tokens=1, cache_write_tokens=1, models=("m",))
    assert priced(usage, {"m": Price(3, 15)}).cost_usd == pytest.approx(9 / 1e6)


def test_priced_never_overwrites_a_reported_cost_and_needs_a_priced_model() -> None:
    """A reported cost stands; no priced model, no tokens or an absurd price leaves it unknown."""
    prices = {"m": Price(3, 15)}
    assert priced(Usage(input_tokens=10, cost_usd=0.0, models=("m",)), prices).cost_usd == 0.0
    assert priced(Usage(input_tokens=10, models=("other",)), prices).cost_usd is None
    assert priced(Usage(input_tokens=10), prices).cost_usd is None
    assert priced(Usage(session="s", models=("m",)), prices).cost_usd is None
    assert priced(Usage(input_tokens=10**12, models=("m",)), {"m": Price(1e300, 1e300)}).cost_usd is None


def test_priced_finds_a_model_under_its_plain_name_and_takes_the_dearest() -> None:
    """claude's "[1m]" suffix and a provider prefix are ignored; with several priced models the
    dearest prices the lot."""
    prices = {"claude-opus-4-8": Price(5, 25), "gpt-4o": Price(2.5, 10), "lite": Price(0.1, 0.4)}
    assert priced(Usage(output_tokens=10**6, models=("claude-opus-4-8[1m]",)), prices).cost_usd == 25
    assert priced(Usage(output_tokens=10**6, models=("openai/gpt-4o",)), prices).cost_usd == 10
    assert priced(Usage(output_tokens=10**6, models=("lite", "gpt-4o")), prices).cost_usd == 10


def test_codex_run_priced_from_the_sample() -> None:
    """A codex run (no cost of its own) priced per aq.yaml: input without cache at the input price."""
    usage = read("codex-json", "codex-json.jsonl")
    assert usage is not None
    prices = parse_prices({"gpt-fake": {"input": 1.25, "output": 10, "cache_read": 0.125}}, "w")
    usage = priced(replace(usage, models=("gpt-fake",)), prices)
    assert usage.cost_usd == pytest.approx((800 * 1.25 + 7 * 10 + 200 * 0.125) / 1e6)


def test_parse_prices() -> None:
    """aq.yaml prices: numbers (or "$3") per model, cache prices optional; none is no table."""
    assert parse_prices(None, "aq.yaml: prices") == {}
    assert parse_prices({}, "aq.yaml: prices") == {}
    assert parse_prices({"claude-x": {"input": 3, "output": "$15", "cache_read": 0.3},
                         "gpt-y": {"input": 1.25, "output": 10, "cache_write": 0}}, "w") == {
        "claude-x": Price(input=3.0, output=15.0, cache_read=0.3),
        "gpt-y": Price(input=1.25, output=10.0, cache_write=0.0)}


@pytest.mark.parametrize(("raw", "message"), [
    ([1, 2], "aq.yaml: prices: expected model names, each with {input: 3, output: 15, "
             "cache_read: 0.3} (USD per million tokens); got [1, 2]"),
    ({3.5: {"input": 1, "output": 2}}, "aq.yaml: prices: 3.5 is not a model name; write it as a string"),
    ({"m": 3}, "aq.yaml: prices.m: expected {input: 3, output: 15, cache_read: 0.3} "
               "(USD per million tokens), got 3"),
    ({"m": {"input": 1, "ouput": 2}}, "aq.yaml: prices.m: unknown key 'ouput'; known: input, "
                                       "output, cache_read, cache_write"),
    ({"m": {"input": 1}}, "aq.yaml: prices.m: needs output, e.g. {input: 3, output: 15"),
    ({"m": {"input": -1, "output": 2}}, "aq.yaml: prices.m.input: -1 is not an amount of dollars "
                                         "such as 5 or 2.50, in USD per million tokens"),
    ({"m": {"input": 1, "output": "lots"}}, "aq.yaml: prices.m.output: 'lots' is not an amount"),
    ({"m": {"input": True, "output": 2}}, "aq.yaml: prices.m.input: True is not an amount"),
    ({"m": {"input": 1, "output": 2, "cache_read": float("nan")}}, "aq.yaml: prices.m.cache_read: nan"),
])
def test_parse_prices_refuses_bad_values(raw: object, message: str) -> None:
    """A bad price table is a ConfigError of one line naming where, the key, the value and what
    was expected."""
    with pytest.raises(ConfigError) as caught:
        parse_prices(raw, "aq.yaml: prices")
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)
