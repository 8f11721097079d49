"""aq's MCP server as each engine's CLI takes it for one run: the flags, the config file, the
variables, and the refusal of an engine that cannot take one."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from aq.infra.engines import DEFAULT_ENGINES, EngineSpec, engine_from_config
from aq.infra.mcpconfig import McpRefused, aq_server, give, refusal, refusals
from aq.infra.usage.registry import READERS

PYTHON = "/opt/aq/bin/python"
ENV = {"AQ_JOB_ID": "manager", "AQ_ATTEMPT": "2", "AQ_QUEUE": "/q", "AQ_WORKER_ID": "w1",
       "PATH": "/usr/bin", "SSH_AUTH_SOCK": "/run/agent.sock", "PYTHONPATH": "/src/aq"}
SERVER = {"command": PYTHON, "args": ["-P", "-m", "aq", "mcp", "--queue", "/q"],
          "env": {"AQ_JOB_ID": "manager", "AQ_ATTEMPT": "2", "AQ_QUEUE": "/q",
                  "AQ_WORKER_ID": "w1", "PYTHONPATH": "/src/aq"}}


def run_argv(spec: EngineSpec, config: Path, *, yolo: bool = False, mcp: bool = True,
             session: str | None = None) -> list[str]:
    given = give(spec, config, Path("/q"), ENV, PYTHON) if mcp else None
    return spec.argv(prompt="p", prompt_file="/run/1.prompt", yolo=yolo, session=session,
                     usage_file="/run/1.usage", mcp=given.values if given else None)


def test_claude_reads_the_server_from_a_file_and_may_use_its_tools(tmp_path: Path) -> None:
    """claude gets `--mcp-config FILE` (the mcpServers JSON: the worker's python, -P, the
    attempt's AQ_ variables) and aq's tools allowed, after every other flag; without mcp, none
    of it, and no file."""
    config = tmp_path / "1.mcp.json"
    argv = run_argv(DEFAULT_ENGINES["claude"], config, session="s1")
    assert argv[-6:] == ["--resume", "s1", "--mcp-config", str(config), "--allowedTools", "mcp__aq"]
    assert json.loads(config.read_text()) == {"mcpServers": {"aq": SERVER}}
    config.unlink()
    plain = run_argv(DEFAULT_ENGINES["claude"], config, mcp=False)
    assert "--mcp-config" not in plain and "--allowedTools" not in plain and not config.exists()


def test_claude_waits_for_the_server_however_busy_the_machine(tmp_path: Path) -> None:
    """claude -p runs its first turn without an --mcp-config server that has not connected
    within MCP_CONNECT_TIMEOUT_MS (5 s unless set): under load `aq mcp` took longer, and the
    agent found no spawn_child. It is told to wait up to a minute, and to block on it."""
    added = give(DEFAULT_ENGINES["claude"], tmp_path / "1.mcp.json", Path("/q"), ENV, PYTHON).env
    assert added == {"MCP_CONNECT_TIMEOUT_MS": "60000", "MCP_CONNECTION_NONBLOCKING": "false"}


def test_codex_gets_its_server_table_before_the_prompt(tmp_path: Path) -> None:
    """codex gets `-c mcp_servers.aq=<TOML>` before `resume` and the `-` that reads stdin: the
    server, its tools approved, required, and the engine's other variables passed by name."""
    argv = run_argv(DEFAULT_ENGINES["codex"], tmp_path / "1.mcp.json", yolo=True, session="t1")
    at = argv.index("-c")
    assert argv[at + 2:] == ["resume", "t1", "-"]
    assert argv[at - 1] == "--dangerously-bypass-approvals-and-sandbox"
    key, _, value = argv[at + 1].partition("=")
    table = tomllib.loads(f"aq = {value}")["aq"]
    assert key == "mcp_servers.aq"
    assert {name: table[name] for name in SERVER} == SERVER
    assert table["env_vars"] == ["PATH", "SSH_AUTH_SOCK"]
    assert (table["default_tools_approval_mode"], table["required"]) == ("approve", True)
    assert not (tmp_path / "1.mcp.json").exists()  # codex reads no file


@pytest.mark.parametrize("text", ['say "hi"', "back\\slash", "new\nline", "tab\tdel\x7f",
                                  "ünïcødé ✓ 🦀", "[x] = {y}"])
def test_the_toml_table_carries_any_text_as_it_is(text: str) -> None:
    """Paths and values with quotes, backslashes, control characters or any Unicode come back
    from codex's TOML exactly."""
    server = aq_server(Path(f"/q/{text}"), {"AQ_JOB_ID": text}, python=text)
    table = tomllib.loads(f"aq = {server.toml()}")["aq"]
    assert (table["command"], table["args"][-1], table["env"]) == (text, f"/q/{text}",
                                                                    {"AQ_JOB_ID": text})


def test_copilot_reads_the_file_and_may_use_the_servers_tools(tmp_path: Path) -> None:
    config = tmp_path / "1.mcp.json"
    argv = run_argv(DEFAULT_ENGINES["copilot"], config)
    assert argv[-3:] == ["--additional-mcp-config", f"@{config}", "--allow-tool=aq"]
    assert json.loads(config.read_text())["mcpServers"]["aq"] == SERVER


def test_opencode_gets_its_inline_config_merged_into_the_users(tmp_path: Path) -> None:
    """opencode takes the server in OPENCODE_CONFIG_CONTENT; an inline config the user already
    gives it keeps its settings and servers."""
    spec = DEFAULT_ENGINES["opencode"]
    given = give(spec, tmp_path / "1.mcp.json", Path("/q"), ENV, PYTHON)
    config = json.loads(given.env["OPENCODE_CONFIG_CONTENT"])
    assert config == {"mcp": {"aq": {"type": "local", "enabled": True,
                                     "command": [PYTHON, *SERVER["args"]],
                                     "environment": SERVER["env"]}}}
    assert spec.argv(prompt="p", prompt_file="/f", yolo=False, mcp=given.values) == [
        "opencode", "run", "--format", "json"]
    users = json.dumps({"model": "x/y", "mcp": {"mine": {"type": "remote", "url": "https://m"}}})
    merged = give(spec, tmp_path / "1.mcp.json", Path("/q"),
                  {**ENV, "OPENCODE_CONFIG_CONTENT": users}, PYTHON)
    config = json.loads(merged.env["OPENCODE_CONFIG_CONTENT"])
    assert config["model"] == "x/y" and sorted(config["mcp"]) == ["aq", "mine"]
    assert "OPENCODE_CONFIG_CONTENT" in merged.note


@pytest.mark.parametrize("name", ["aider", "gemini", "shell", "goose", "devin"])
def test_an_engine_with_no_way_to_take_the_server_is_refused_in_one_line(
        name: str, tmp_path: Path) -> None:
    spec = DEFAULT_ENGINES[name]
    with pytest.raises(McpRefused) as refused:
        give(spec, tmp_path / "1.mcp.json", Path("/q"), ENV, PYTHON)
    assert str(refused.value) == refusal(spec)
    assert str(refused.value).startswith(f"engine {name!r} cannot take aq's MCP server")
    assert "\n" not in str(refused.value) and not (tmp_path / "1.mcp.json").exists()
    assert refusals([name, "claude", name, "nonesuch"], DEFAULT_ENGINES) == [refusal(spec)]


def test_an_aq_yaml_engine_takes_the_server_through_its_own_mcp_group(tmp_path: Path) -> None:
    """A custom engine names how its CLI takes the server: `mcp` flags (where `{mcp}` stands,
    else before `--`) and `mcp_env` variables, both with the placeholders filled; an override of
    a built-in's cmd keeps the built-in's way."""
    spec = engine_from_config("my-agent", {
        "cmd": ["my-agent", "--json", "--", "{prompt}"],
        "mcp": ["--servers", "{mcp_config}"],
        "mcp_env": {"MY_AGENT_MCP": "{mcp_config}"},
    }, None, frozenset(READERS))
    config = tmp_path / "1.mcp.json"
    given = give(spec, config, Path("/q"), ENV, PYTHON)
    assert spec.argv(prompt="do it", prompt_file="/f", yolo=False, mcp=given.values) == [
        "my-agent", "--json", "--servers", str(config), "--", "do it"]
    assert given.env == {"MY_AGENT_MCP": str(config)}
    assert json.loads(config.read_text())["mcpServers"]["aq"] == SERVER
    assert "its mcp flags and MY_AGENT_MCP" in given.note
    claude = engine_from_config("claude", {"cmd": "claude -p --disallowedTools Bash"},
                                DEFAULT_ENGINES["claude"], frozenset(READERS))
    assert claude.mcp == DEFAULT_ENGINES["claude"].mcp


def test_a_config_that_cannot_be_written_is_a_refusal(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(McpRefused, match="could not write aq's MCP config"):
        give(DEFAULT_ENGINES["claude"], blocker / "1.mcp.json", Path("/q"), ENV, PYTHON)
