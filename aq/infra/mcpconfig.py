"""aq's MCP server given to an engine for one run: a job with `mcp: true` has `aq mcp` among its
agent's MCP servers, so the agent can add jobs, spawn children and read the queue through
tools, with no shell.

Every agent CLI takes MCP servers its own way, and aq writes into none of the user's project
or home config. An engine entry (aq.infra.engines) says how its CLI takes a server for one run:
its option group `mcp` (flags, put where `{mcp}` stands in its cmd) and `mcp_env` (variables),
in which these placeholders stand for the server:
- `{mcp_config}`: a JSON file in the attempt's run folder, `{"mcpServers": {"aq": {"command",
  "args", "env"}}}`: what claude (`--mcp-config`), copilot (`--additional-mcp-config @FILE`)
  and most MCP clients read;
- `{mcp_toml}`: codex's `mcp_servers.aq` table, inline (`-c mcp_servers.aq={mcp_toml}`): its
  tools approved (`codex exec` refuses a tool that needs approval), the server required (codex
  ends rather than runs without it), the engine's variables passed on (codex passes a server
  only a few unless told);
- `{mcp_opencode}`: opencode's config JSON, `{"mcp": {"aq": {...}}}` (OPENCODE_CONFIG_CONTENT).

The server is named `aq` (claude calls its tools `mcp__aq__spawn_child`) and runs as the worker
does: its Python, `-P` (an `aq` folder in the job's cwd is not what it imports), `-m aq mcp
--queue ROOT`, with the attempt's AQ_ variables, so `spawn_child` knows its parent. An engine
with neither `mcp` nor `mcp_env` cannot take it: `aq add` and `aq lint` refuse such a job, and
its attempt ends engine_missing rather than run without the server.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aq.infra.engines import EngineSpec
from aq.infra.files import write_atomic

SERVER = "aq"  # the name every CLI knows aq's server by
PASSED = ("AQ_JOB_ID", "AQ_ATTEMPT", "AQ_QUEUE", "AQ_WORKER_ID", "PYTHONPATH")
STARTUP_SECONDS = 60  # codex's wait for the server to list its tools (it starts in about 1 s)


class McpRefused(ValueError):
    """The engine cannot be given aq's MCP server (one line, naming the engine)."""


@dataclass(frozen=True, slots=True)
class McpServer:
    """`aq mcp` as an MCP client starts it."""

    command: str
    args: tuple[str, ...]
    env: Mapping[str, str]  # set for the server: the attempt's AQ_ variables
    passed: tuple[str, ...] = ()  # names of the engine's variables it sees too, where told (codex)

    def config(self) -> dict[str, Any]:
        """The `mcpServers` JSON most CLIs read."""
        return {"mcpServers": {SERVER: {"command": self.command, "args": list(self.args),
                                        "env": dict(self.env)}}}

    def toml(self) -> str:
        """codex's `mcp_servers.aq` table, inline."""
        table: dict[str, object] = {
            "command": self.command, "args": list(self.args), "env": dict(self.env),
            "env_vars": list(self.passed), "default_tools_approval_mode": "approve",
            "required": True, "startup_timeout_sec": STARTUP_SECONDS}
        return _toml(table)

    def opencode(self) -> str:
        """opencode's config JSON with the server (OPENCODE_CONFIG_CONTENT)."""
        return json.dumps({"mcp": {SERVER: {"type": "local", "enabled": True,
                                            "command": [self.command, *self.args],
                                            "environment": dict(self.env)}}})


def aq_server(queue_root: Path, env: Mapping[str, str], python: str = sys.executable) -> McpServer:
    """aq's server for an attempt whose engine runs in `env`."""
    return McpServer(python, ("-P", "-m", "aq", "mcp", "--queue", str(queue_root)),
                     {name: env[name] for name in PASSED if name in env},
                     tuple(sorted(name for name in env if name not in PASSED)))


@dataclass(frozen=True, slots=True)
class McpGiven:
    """What an engine's run gets for aq's server."""

    values: dict[str, str]  # of the placeholders, for the `mcp` option group (EngineSpec.argv)
    env: dict[str, str]  # added to the engine's environment
    note: str  # the line the attempt's log says it with


def refusal(spec: EngineSpec) -> str | None:
    """Why a job with `mcp: true` cannot run on `spec` (one line), or None when it can."""
    if spec.takes_mcp:
        return None
    return (f"engine {spec.name!r} cannot take aq's MCP server (mcp: true): run the job on "
            "claude, codex, copilot or opencode, or give the engine mcp: flags in aq.yaml")


def refusals(names: Iterable[str], engines: Mapping[str, EngineSpec]) -> list[str]:
    """The refusals of the engines named (those not defined are another problem)."""
    return [line for name in dict.fromkeys(names) if name in engines
            if (line := refusal(engines[name])) is not None]


def give(spec: EngineSpec, config_file: Path, queue_root: Path, env: Mapping[str, str],
         python: str = sys.executable) -> McpGiven:
    """aq's server for one run of `spec` in `env`: `config_file` written when the engine reads
    it, the placeholder values and the variables to add. `McpRefused` when it cannot be given."""
    refused = refusal(spec)
    if refused is not None:
        raise McpRefused(refused)
    server = aq_server(queue_root, env, python)
    values = {"mcp_config": str(config_file), "mcp_toml": server.toml(),
              "mcp_opencode": server.opencode()}
    written = any("{mcp_config}" in part for part in (*spec.mcp, *spec.mcp_env.values()))
    if written:
        try:
            write_atomic(config_file, json.dumps(server.config(), indent=2) + "\n")
        except OSError as err:
            raise McpRefused(f"could not write aq's MCP config {config_file}: "
                             f"{err.strerror or err}") from err
    added = {name: _merged(env.get(name), value)
             for name, value in spec.mcp_environment(values).items()}
    how = [*(["its mcp flags"] if spec.mcp else []), *sorted(added)]
    note = (f"mcp: engine {spec.name} is given aq's MCP server {SERVER!r} "
            f"({' '.join([python, *server.args])}) through {' and '.join(how)}"
            + (f"; its config: {config_file}" if written else ""))
    return McpGiven(values, added, note)


def _merged(before: str | None, ours: str) -> str:
    """A variable already set and ours, both JSON objects (opencode's inline config): ours
    merged into it, so the user's own settings stay. Else ours."""
    try:
        old, new = json.loads(before or ""), json.loads(ours)
    except ValueError:
        return ours
    if not isinstance(old, dict) or not isinstance(new, dict):
        return ours
    return json.dumps(_deep(old, new))


def _deep(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    merged = dict(old)
    for key, value in new.items():
        before = merged.get(key)
        merged[key] = (_deep(before, value) if isinstance(before, dict) and isinstance(value, dict)
                       else value)
    return merged


def _toml(value: object) -> str:
    """`value` (str, bool, int, list, dict) as a TOML value on one line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):  # JSON's escapes are TOML's, but for DEL, which TOML escapes too
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml(str(key))} = {_toml(item)}"
                               for key, item in value.items()) + "}"
    raise TypeError(f"no TOML for {type(value).__name__}")
