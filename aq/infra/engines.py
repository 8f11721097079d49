"""Engines: command templates that run a coding agent (or a shell script) on a prompt.

How the prompt reaches the engine (`input`):
- `stdin`: written to the engine's standard input, which is then closed. The safe way for
  every agent CLI that reads it: no text is ever read as an option, and no length limit.
- `prompt`: only through placeholders in `cmd`: `{prompt_file}` (a file holding it), or
  `{prompt}` behind `--` or in a `--flag={prompt}` form. The engine's stdin is closed.
- `body`: like `prompt`, but the text is the job's body alone (the shell engine's script).

Option groups, each put where its placeholder stands as a whole element, or else just before
the first `--` of `cmd` (or at its end when it has none), so they are never read as prompt:
`{yolo}` (auto-approve flags, only when the job sets `yolo: true`), `{resume}` (continue the
previous attempt's agent session, on `retry-from: session`; `{session}` inside it), and
`{max_usd}` (the CLI's own spending cap, given what is left of the job's `budget.usd`;
`{usd}` inside it), and `{mcp}` (aq's MCP server for the run, only when the job sets
`mcp: true`; `{mcp_config}`, `{mcp_toml}` or `{mcp_opencode}` inside it, and in the values of
`mcp_env`, the variables it adds: see aq.infra.mcpconfig). An engine with neither `mcp` nor
`mcp_env` cannot take the server: a job with `mcp: true` on it is refused, never run without
it. `{usage_file}` is a path the CLI may write its usage to (read after the run by the
engine's usage reader, see aq.infra.usage).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from aq.errors import ConfigError
from aq.infra.files import write_atomic

INPUTS = ("stdin", "prompt", "body")
GROUPS = ("yolo", "resume", "max_usd", "mcp")
# An argv element longer than this cannot be passed on Linux (MAX_ARG_STRLEN is 128 KiB).
ARG_MAX_ELEMENT = 128 * 1024 - 1


@dataclass(frozen=True, slots=True)
class EngineSpec:
    name: str
    cmd: tuple[str, ...]
    yolo: tuple[str, ...] = ()
    input: str = "prompt"
    env: Mapping[str, str] = field(default_factory=dict)
    usage: str | None = None  # the usage reader for its output (aq.infra.usage.registry.READERS)
    resume: tuple[str, ...] = ()  # resumes session {session}; empty: the CLI cannot be resumed
    max_usd: tuple[str, ...] = ()  # the CLI's own cap of {usd}; empty: it has none
    yolo_env: Mapping[str, str] = field(default_factory=dict)  # env that yolo adds (goose)
    mcp: tuple[str, ...] = ()  # flags that give the CLI aq's MCP server (aq.infra.mcpconfig)
    mcp_env: Mapping[str, str] = field(default_factory=dict)  # variables that give it the server

    @property
    def program(self) -> str:
        """The command's name without its folder (`claude` for /opt/bin/claude)."""
        return self.cmd[0].rsplit("/", 1)[-1]

    def argv(self, *, prompt: str, prompt_file: str, yolo: bool, session: str | None = None,
             usd: float | None = None, usage_file: str = "",
             mcp: Mapping[str, str] | None = None) -> list[str]:
        """The command line of one run. The prompt appears in it only where the template put
        `{prompt}`; `ArgvError` when that would not survive the trip (see `check_prompt`).
        `mcp`: the values of the `{mcp_...}` placeholders, for a job that takes aq's server."""
        groups = {
            "yolo": list(self.yolo) if yolo else [],
            "resume": [_fill(p, session=session or "") for p in self.resume] if session else [],
            "max_usd": [_fill(p, usd=_money(usd)) for p in self.max_usd] if usd is not None else [],
            "mcp": [_fill(p, **mcp) for p in self.mcp] if mcp is not None else [],
        }
        placed = {group for part in self.cmd if (group := _group_of(part)) is not None}
        argv: list[str] = []
        after_dashes = False
        for part in self.cmd:
            group = _group_of(part)
            if group is not None:
                argv.extend(groups.get(group, []))
                continue
            if part == "--" and not after_dashes:
                after_dashes = True  # the groups with no place of their own go before it
                argv.extend(flag for name in GROUPS if name not in placed for flag in groups[name])
                placed.update(GROUPS)
            if "{prompt}" in part:
                check_prompt(self.name, part, prompt, after_dashes)
            argv.append(_fill(part, prompt=prompt, prompt_file=prompt_file, usage_file=usage_file))
        for name in GROUPS:
            if name not in placed:
                argv.extend(groups[name])
        return argv

    @property
    def can_resume(self) -> bool:
        return bool(self.resume)

    @property
    def takes_mcp(self) -> bool:
        """Its CLI can be given aq's MCP server for a run (a job with `mcp: true`)."""
        return bool(self.mcp or self.mcp_env)

    def mcp_environment(self, mcp: Mapping[str, str]) -> dict[str, str]:
        """The variables that give the CLI aq's MCP server, placeholders filled from `mcp`."""
        return {name: _fill(value, **mcp) for name, value in self.mcp_env.items()}


class ArgvError(ValueError):
    """A prompt that cannot travel on this engine's command line."""


def check_prompt(engine: str, part: str, prompt: str, after_dashes: bool) -> None:
    if len(part.replace("{prompt}", prompt).encode()) > ARG_MAX_ELEMENT:
        raise ArgvError(f"the prompt is {len(prompt.encode()) // 1024} KiB, too long for one "
                        f"command-line element; give engine {engine!r} `input: stdin` or "
                        "{prompt_file} in aq.yaml")
    if part == "{prompt}" and not after_dashes and prompt.startswith("-"):
        raise ArgvError(f"the prompt starts with '-' and engine {engine!r} would read it as an "
                        "option; put {prompt} after '--' in its cmd, or use `input: stdin`")


def _group_of(part: str) -> str | None:
    if part.startswith("{") and part.endswith("}") and part[1:-1] in GROUPS:
        return part[1:-1]
    return None


def _fill(part: str, **values: str) -> str:
    """The placeholders of `part` filled in one pass: a prompt that mentions `{prompt_file}`
    stays as it was written."""
    return _PLACEHOLDER.sub(lambda found: values.get(found.group(1), found.group(0)), part)


_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def _money(usd: float | None) -> str:
    return f"{max(usd or 0.0, 0.0):.4f}"


def _spec(name: str, cmd: str, *, yolo: str = "", input: str = "stdin", usage: str | None = None,
          resume: str = "", max_usd: str = "", yolo_env: Mapping[str, str] | None = None,
          mcp: str = "", mcp_env: Mapping[str, str] | None = None) -> EngineSpec:
    return EngineSpec(name, tuple(shlex.split(cmd)), tuple(shlex.split(yolo)), input, {}, usage,
                      tuple(shlex.split(resume)), tuple(shlex.split(max_usd)), dict(yolo_env or {}),
                      tuple(shlex.split(mcp)), dict(mcp_env or {}))


# What each CLI is, as its makers document it and as runs against a fake model API showed
# (tests/data/agent-cli-samples): headless flags, a prompt on stdin, JSON output with usage.
# `mcp`: aq's MCP server (aq.infra.mcpconfig) for one run, its tools allowed, as each CLI took
# it from the fake API's model: claude and codex in tests/agents/test_engine_mcp.py, copilot
# 1.0.102 and opencode 1.18.33 by hand. gemini 0.61 reads MCP servers only from the project's
# or the user's settings, or from root-owned system files: it takes none.
DEFAULT_ENGINES: dict[str, EngineSpec] = {
    spec.name: spec
    for spec in (
        _spec("claude", "claude -p --output-format stream-json --verbose",
              yolo="--dangerously-skip-permissions", usage="claude-json",
              resume="--resume {session}", max_usd="--max-budget-usd {usd}",
              mcp="--mcp-config {mcp_config} --allowedTools mcp__aq",
              # claude -p waits for --mcp-config servers only MCP_CONNECT_TIMEOUT_MS (5 s), then
              # runs without their tools: `aq mcp` starts in about 1 s, on a busy machine in more
              mcp_env={"MCP_CONNECT_TIMEOUT_MS": "60000", "MCP_CONNECTION_NONBLOCKING": "false"}),
        # `exec resume ID -` continues a thread; `-` reads the prompt from stdin
        _spec("codex", "codex exec --json --skip-git-repo-check {yolo} {mcp} {resume} -",
              yolo="--dangerously-bypass-approvals-and-sandbox", usage="codex-json",
              resume="resume {session}", mcp="-c mcp_servers.aq={mcp_toml}"),
        # without --skip-trust every headless run exits 55 ("not a trusted directory")
        _spec("gemini", "gemini --skip-trust --output-format stream-json",
              yolo="--approval-mode=yolo", usage="gemini-json", resume="--resume {session}"),
        # aider's usage is in its analytics log; its streaming mode miscounts tokens
        _spec("aider", "aider --message-file {prompt_file} --no-stream --no-check-update "
              "--no-show-model-warnings --no-pretty --analytics-log {usage_file}",
              yolo="--yes-always", input="prompt", usage="aider-analytics"),
        _spec("copilot", "copilot --output-format json --usage-output-file {usage_file}",
              yolo="--allow-all-tools", usage="copilot-json",
              mcp="--additional-mcp-config @{mcp_config} --allow-tool=aq"),
        _spec("opencode", "opencode run --format json", yolo="--auto", usage="opencode-json",
              mcp_env={"OPENCODE_CONFIG_CONTENT": "{mcp_opencode}"}),
        _spec("qwen", "qwen --output-format stream-json", yolo="--yolo", usage="qwen-json",
              resume="--resume {session}"),
        _spec("cursor-agent", "cursor-agent -p --output-format stream-json", yolo="--force",
              usage="cursor-json", resume="--resume {session}"),
        _spec("amp", "amp -x --stream-json", yolo="--dangerously-allow-all", usage="amp-json"),
        _spec("goose", "goose run -i -", yolo_env={"GOOSE_MODE": "auto"}),
        # devin takes its prompt as an argument only: behind `--`, never read as an option
        _spec("devin", "devin -p {yolo} -- {prompt}", yolo="--permission-mode bypass",
              input="prompt"),
        _spec("shell", "bash {prompt_file}", input="body"),
    )
}

_VERSIONS: dict[tuple[str, str], str | None] = {}


def engine_version(program: str, env: Mapping[str, str], timeout: float = 30.0,
                   cache: Path | None = None) -> str | None:
    """The first line `PROGRAM --version` prints (None if it says nothing usable in `timeout`),
    recorded with every attempt for reproducibility. Asked once per program per process, and
    kept in `cache` (a JSON file) by the program's real path, size and mtime, so that an
    `aq run --once` does not start a node CLI twice per job."""
    import json

    key = (program, env.get("PATH", ""))
    if key in _VERSIONS:
        return _VERSIONS[key]
    stamp = _stamp(program)
    known: dict[str, object] = {}
    if cache is not None and stamp is not None:
        try:
            loaded = json.loads(cache.read_text(encoding="utf-8"))
            known = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            known = {}
        if stamp in known:
            entry = known[stamp]
            _VERSIONS[key] = entry if isinstance(entry, str) else None
            return _VERSIONS[key]
    from aq.infra.proc import run  # lazily: aq.yaml's engines are read by every command

    try:
        done = run([program, "--version"], env=env, timeout=timeout)
    except OSError:
        done = None
    lines = (done.stdout or done.stderr).strip().splitlines() if done and done.returncode == 0 else []
    _VERSIONS[key] = version = lines[0][:200] if lines else None
    if cache is not None and stamp is not None:
        known[stamp] = version
        with contextlib.suppress(OSError):  # a cache: losing it costs one more --version
            write_atomic(cache, json.dumps(dict(list(known.items())[-64:])))
    return version


def _stamp(program: str) -> str | None:
    """`realpath|size|mtime_ns` of a program: a new install is a new stamp."""
    try:
        real = os.path.realpath(program)
        info = os.stat(real)
    except OSError:
        return None
    return f"{real}|{info.st_size}|{info.st_mtime_ns}"


def headless_problems(spec: EngineSpec, env: Mapping[str, str], *, root: bool) -> list[str]:
    """What stops this engine from running unattended here, as its CLI behaves (one line each)."""
    problems = []
    merged = {**env, **spec.env}
    if spec.program == "claude" and root and "--dangerously-skip-permissions" in spec.yolo \
            and not merged.get("IS_SANDBOX"):
        problems.append("as root, claude refuses --dangerously-skip-permissions (yolo jobs) unless "
                        "IS_SANDBOX=1: add env: {IS_SANDBOX: 1} to engines.claude in aq.yaml")
    if spec.program == "gemini" and "--skip-trust" not in spec.cmd:
        problems.append("headless gemini exits 55 outside a trusted folder: add --skip-trust to its cmd")
    if spec.program == "codex" and "exec" not in spec.cmd:
        problems.append("codex runs headless only as `codex exec`: put exec in its cmd")
    return problems


_KEYS = ("cmd", "yolo", "input", "env", "usage", "resume", "max_usd", "yolo_env", "mcp", "mcp_env")


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def engine_from_config(name: str, raw: object, base: EngineSpec | None,
                       readers: frozenset[str] | None = None) -> EngineSpec:
    """An `engines:` entry of aq.yaml, over the built-in of the same name if there is one.
    `readers` are the usage readers an entry may name."""
    where = f"aq.yaml: engines.{name}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping such as {{cmd: [tool, --print], input: stdin}}")
    unknown = sorted(set(raw) - set(_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; known: {', '.join(_KEYS)}")

    def strings(key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = raw.get(key)
        if value is None:
            return default
        if isinstance(value, str):
            return tuple(shlex.split(value))
        if isinstance(value, list) and all(isinstance(item, str | int | float) for item in value):
            if any("\0" in str(item) for item in value):
                raise ConfigError(f"{where}.{key}: holds a NUL byte, which no command line can")
            return tuple(str(item) for item in value)
        raise ConfigError(f"{where}.{key}: expected a list of strings, got {value!r}")

    def mapping(key: str, default: Mapping[str, str]) -> dict[str, str]:
        """Environment variables: names a process can be given, values that are text."""
        value = raw.get(key, default)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}.{key}: expected a mapping of names to values")
        for name, text in value.items():
            if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
                raise ConfigError(f"{where}.{key}: {name!r} is not an environment variable name "
                                  "(letters, digits and _, not starting with a digit)")
            if not isinstance(text, str | int | float) or isinstance(text, bool) or "\0" in str(text):
                raise ConfigError(f"{where}.{key}.{name}: expected text (quote it), got {text!r}")
        return {str(k): str(v) for k, v in value.items()}

    cmd = strings("cmd", base.cmd if base else ())
    if not cmd:
        raise ConfigError(f"{where}: needs cmd, e.g. cmd: [mytool, --print], input: stdin")
    mode = raw.get("input")
    if mode is None:  # a cmd of one's own that places the prompt means it goes there
        places = "cmd" in raw and any("{prompt" in part for part in cmd)
        mode = "prompt" if places or base is None else base.input
    if mode not in INPUTS:
        raise ConfigError(f"{where}.input: expected one of {', '.join(INPUTS)}, got {mode!r}")
    usage = raw.get("usage", base.usage if base else None)
    if usage is not None and (not isinstance(usage, str) or (readers is not None and usage not in readers)):
        known = ", ".join(sorted(readers or ()))
        raise ConfigError(f"{where}.usage: {usage!r} is not a usage reader; known: {known}")
    spec = EngineSpec(name, cmd, strings("yolo", base.yolo if base else ()), str(mode),
                      mapping("env", base.env if base else {}), usage,
                      strings("resume", base.resume if base else ()),
                      strings("max_usd", base.max_usd if base else ()),
                      mapping("yolo_env", base.yolo_env if base else {}),
                      strings("mcp", base.mcp if base else ()),
                      mapping("mcp_env", base.mcp_env if base else {}))
    _check_template(where, spec)
    return spec


def _check_template(where: str, spec: EngineSpec) -> None:
    """Refuse a template that would put the prompt where it can be read as an option."""
    after_dashes = False
    for part in spec.cmd:
        if part == "--":
            after_dashes = True
        elif part == "{prompt}" and not after_dashes:
            raise ConfigError(f"{where}.cmd: a bare {{prompt}} before '--' is read as an option "
                              "when the prompt starts with '-'; use input: stdin, {prompt_file}, "
                              "'--' before {prompt}, or a --flag={prompt} form")
    if spec.input == "stdin" and any("{prompt}" in part for part in spec.cmd):
        raise ConfigError(f"{where}: input: stdin feeds the prompt on stdin; drop {{prompt}} from cmd")
