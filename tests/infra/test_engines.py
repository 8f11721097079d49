"""Engine templates: where the prompt and the option groups go, and what aq.yaml may say."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aq.errors import ConfigError
from aq.infra import engines
from aq.infra.engines import (
    DEFAULT_ENGINES,
    ArgvError,
    EngineSpec,
    engine_from_config,
    engine_version,
    headless_problems,
)
from aq.infra.usage.registry import READERS

PROMPTS = ["- fix the bug", "--version", "-rf /", "x" * 300 * 1024]


def argv(name: str, prompt: str = "do it", *, yolo: bool = False, session: str | None = None,
         usd: float | None = None) -> list[str]:
    return DEFAULT_ENGINES[name].argv(prompt=prompt, prompt_file="/run/1.prompt", yolo=yolo,
                                      session=session, usd=usd, usage_file="/run/1.usage")


@pytest.mark.parametrize("name", sorted(DEFAULT_ENGINES))
@pytest.mark.parametrize("prompt", PROMPTS, ids=["list", "version", "dash", "300KiB"])
def test_no_built_in_engine_puts_a_prompt_where_it_reads_as_an_option(name: str, prompt: str) -> None:
    """Every built-in feeds the prompt on stdin or a file, or places it after `--`: a body that
    looks like an option, or one of 300 KiB, never becomes an option nor overflows argv."""
    spec = DEFAULT_ENGINES[name]
    if spec.input != "prompt" or "{prompt}" not in " ".join(spec.cmd):
        assert prompt not in argv(name, prompt, yolo=True)
        return
    if len(prompt) > 128 * 1024:
        with pytest.raises(ArgvError, match="too long for one command-line element"):
            argv(name, prompt, yolo=True)
        return
    line = argv(name, prompt, yolo=True)
    assert line.index("--") < line.index(prompt)


@pytest.mark.parametrize("name", sorted(DEFAULT_ENGINES))
def test_built_in_engines_read_usage_with_a_known_reader(name: str) -> None:
    """A built-in names a usage reader that exists (goose, devin and shell print none we read)."""
    spec = DEFAULT_ENGINES[name]
    assert spec.usage is None or spec.usage in READERS
    assert (spec.usage is None) == (name in ("goose", "devin", "shell"))


def test_the_built_in_command_lines() -> None:
    """The argv of the main agent CLIs, as runs against their real binaries showed works."""
    assert argv("claude", yolo=True, usd=1.23456, session="abc") == [
        "claude", "-p", "--output-format", "stream-json", "--verbose",
        "--dangerously-skip-permissions", "--resume", "abc", "--max-budget-usd", "1.2346"]
    assert argv("codex") == ["codex", "exec", "--json", "--skip-git-repo-check", "-"]
    assert argv("codex", yolo=True, session="t-1") == [
        "codex", "exec", "--json", "--skip-git-repo-check",
        "--dangerously-bypass-approvals-and-sandbox", "resume", "t-1", "-"]
    assert argv("gemini", yolo=True) == ["gemini", "--skip-trust", "--output-format", "stream-json",
                                         "--approval-mode=yolo"]
    assert argv("aider")[:3] == ["aider", "--message-file", "/run/1.prompt"]
    assert "/run/1.usage" in argv("aider") and "/run/1.usage" in argv("copilot")
    assert argv("devin", "- a list", yolo=True) == [
        "devin", "-p", "--permission-mode", "bypass", "--", "- a list"]
    assert argv("shell") == ["bash", "/run/1.prompt"]


def test_option_groups_go_before_the_first_dashes_unless_placed() -> None:
    """yolo, resume and max_usd flags without a placeholder go before `--`, else at the end;
    a placeholder puts them where it stands, and nothing there when not wanted."""
    spec = EngineSpec("t", ("tool", "--", "{prompt}"), ("-y",), "prompt", resume=("-r", "{session}"))
    assert spec.argv(prompt="p", prompt_file="/f", yolo=True, session="s") == [
        "tool", "-y", "-r", "s", "--", "p"]
    placed = EngineSpec("t", ("tool", "--", "{prompt}", "{yolo}"), ("-y",), "prompt")
    assert placed.argv(prompt="p", prompt_file="/f", yolo=True) == ["tool", "--", "p", "-y"]
    assert placed.argv(prompt="p", prompt_file="/f", yolo=False) == ["tool", "--", "p"]
    plain = EngineSpec("t", ("tool", "--prompt={prompt}"), ("-y",), "prompt", max_usd=("--cap", "{usd}"))
    assert plain.argv(prompt="-p", prompt_file="/f", yolo=True, usd=-2.0) == [
        "tool", "--prompt=-p", "-y", "--cap", "0.0000"]


def test_an_unsafe_prompt_in_a_hand_built_spec_is_refused_at_run_time() -> None:
    """A spec made in code (not through aq.yaml) with a bare {prompt} refuses a prompt starting with '-'."""
    spec = EngineSpec("t", ("tool", "{prompt}"), input="prompt")
    assert spec.argv(prompt="fine", prompt_file="/f", yolo=False) == ["tool", "fine"]
    with pytest.raises(ArgvError, match="starts with '-'"):
        spec.argv(prompt="--version", prompt_file="/f", yolo=False)


def test_an_aq_yaml_entry_overrides_a_built_in_key_by_key() -> None:
    """An override keeps what it does not name; a cmd of its own that places the prompt switches
    input to prompt; usage names a reader."""
    base = DEFAULT_ENGINES["claude"]
    env_only = engine_from_config("claude", {"env": {"IS_SANDBOX": 1}}, base, frozenset(READERS))
    assert (env_only.cmd, env_only.input, env_only.usage, env_only.env) == (
        base.cmd, "stdin", "claude-json", {"IS_SANDBOX": "1"})
    mine = engine_from_config("mine", {"cmd": "mine --json --file {prompt_file}", "usage": "codex-json"},
                              None, frozenset(READERS))
    assert (mine.input, mine.usage) == ("prompt", "codex-json")
    with pytest.raises(ConfigError, match="not a usage reader; known: aider-analytics"):
        engine_from_config("mine", {"cmd": ["x"], "usage": "x-json"}, None, frozenset(READERS))


def test_headless_problems_name_what_the_cli_needs_here() -> None:
    """claude as root needs IS_SANDBOX for yolo; gemini needs --skip-trust; codex needs exec."""
    claude = DEFAULT_ENGINES["claude"]
    assert "IS_SANDBOX=1" in headless_problems(claude, {}, root=True)[0]
    assert headless_problems(claude, {"IS_SANDBOX": "1"}, root=True) == []
    assert headless_problems(claude, {}, root=False) == []
    gemini = engine_from_config("gemini", {"cmd": ["gemini", "--output-format", "json"]},
                                DEFAULT_ENGINES["gemini"])
    assert "--skip-trust" in headless_problems(gemini, {}, root=False)[0]
    assert headless_problems(DEFAULT_ENGINES["codex"], {}, root=True) == []


def test_an_engine_version_is_asked_once_and_kept_until_the_program_changes(tmp_path: Path) -> None:
    """`--version` runs once per installed program: another process reads it from the cache,
    and a reinstall (new size or mtime) asks again."""
    calls = tmp_path / "calls"
    program = tmp_path / "agent"
    program.write_text(f"#!/bin/sh\necho x >> {calls}\necho 'agent 1.2.3'\n")
    program.chmod(0o755)
    cache = tmp_path / "engine-versions.json"
    env = {"PATH": os.defpath}
    assert engine_version(str(program), env, cache=cache) == "agent 1.2.3"
    engines._VERSIONS.clear()  # as a new process would start
    assert engine_version(str(program), env, cache=cache) == "agent 1.2.3"
    assert calls.read_text().count("x") == 1
    program.write_text(f"#!/bin/sh\necho x >> {calls}\necho 'agent 1.3.0 (new build)'\n")
    engines._VERSIONS.clear()
    assert engine_version(str(program), env, cache=cache) == "agent 1.3.0 (new build)"
    assert calls.read_text().count("x") == 2


def test_a_prompt_that_mentions_a_placeholder_reaches_the_engine_as_written() -> None:
    """Placeholders are filled in one pass: a job about aq itself keeps its `{prompt_file}`."""
    spec = EngineSpec("t", ("tool", "--prompt={prompt}", "--file={prompt_file}"), input="prompt")
    assert spec.argv(prompt="use {prompt_file} and {usage_file}", prompt_file="/f", yolo=False) == [
        "tool", "--prompt=use {prompt_file} and {usage_file}", "--file=/f"]
