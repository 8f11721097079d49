"""Engines: command templates that run a coding agent (or a shell script) on a prompt.

Placeholders in `cmd`: `{prompt}` (the prompt text), `{prompt_file}` (a file holding it),
and `{yolo}` as a whole element (the engine's auto-approve flags, only when the job sets
`yolo: true`; appended at the end when the template has no `{yolo}`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from aq.errors import ConfigError


@dataclass(frozen=True, slots=True)
class EngineSpec:
    name: str
    cmd: tuple[str, ...]
    yolo: tuple[str, ...] = ()
    input: str = "prompt"  # "prompt": persona + body + failure tail; "body": the body alone (scripts)
    env: Mapping[str, str] = field(default_factory=dict)

    def argv(self, *, prompt: str, prompt_file: str, yolo: bool) -> list[str]:
        flags = list(self.yolo) if yolo else []
        argv: list[str] = []
        placed = False
        for part in self.cmd:
            if part == "{yolo}":
                argv.extend(flags)
                placed = True
            else:
                argv.append(part.replace("{prompt_file}", prompt_file).replace("{prompt}", prompt))
        if not placed:
            argv.extend(flags)
        return argv


DEFAULT_ENGINES: dict[str, EngineSpec] = {
    spec.name: spec
    for spec in (
        EngineSpec("claude", ("claude", "-p", "{prompt}"), ("--dangerously-skip-permissions",)),
        EngineSpec("codex", ("codex", "exec", "{yolo}", "{prompt}"),
                   ("--dangerously-bypass-approvals-and-sandbox",)),
        EngineSpec("devin", ("devin", "-p", "{yolo}", "--", "{prompt}")),
        EngineSpec("aider", ("aider", "--message", "{prompt}"), ("--yes-always",)),
        EngineSpec("gemini", ("gemini", "-p", "{prompt}"), ("--yolo",)),
        EngineSpec("shell", ("bash", "{prompt_file}"), input="body"),
    )
}


def engine_from_config(name: str, raw: object, base: EngineSpec | None) -> EngineSpec:
    """An `engines:` entry of aq.yaml, over the built-in of the same name if there is one."""
    where = f"aq.yaml: engines.{name}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping such as {{cmd: [tool, -p, \"{{prompt}}\"]}}")
    unknown = set(raw) - {"cmd", "yolo", "input", "env"}
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}; known: cmd, yolo, input, env")

    def strings(key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = raw.get(key)
        if value is None:
            return default
        if isinstance(value, str):
            import shlex

            return tuple(shlex.split(value))
        if isinstance(value, list) and all(isinstance(item, str | int | float) for item in value):
            return tuple(str(item) for item in value)
        raise ConfigError(f"{where}.{key}: expected a list of strings, got {value!r}")

    cmd = strings("cmd", base.cmd if base else ())
    if not cmd:
        raise ConfigError(f"{where}: needs cmd, e.g. cmd: [mytool, --prompt, \"{{prompt}}\"]")
    mode = raw.get("input", base.input if base else "prompt")
    if mode not in ("prompt", "body"):
        raise ConfigError(f"{where}.input: expected prompt or body, got {mode!r}")
    env = raw.get("env", base.env if base else {})
    if not isinstance(env, dict):
        raise ConfigError(f"{where}.env: expected a mapping of names to values")
    return EngineSpec(name, cmd, strings("yolo", base.yolo if base else ()), mode,
                      {str(k): str(v) for k, v in env.items()})
