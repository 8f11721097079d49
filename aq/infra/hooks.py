"""Hooks: a person's own shell commands, run when a job moves to a stage or an alert is raised
(aq.yaml `hooks:`).

A hook tells; it never decides. It runs after the move it hears of is committed, so whatever
it does (fails, hangs, is not installed) the move stands: a failure is reported in one line and
recorded, never raised. It gets the event as JSON on stdin and AQ_* variables, runs with `sh -c`
in the queue's root, and at its timeout its whole process group is stopped (aq.infra.proc.run).
The settings are parsed here, apart from the runner, as the config loader reads them on every
command.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aq.core.durations import parse_duration
from aq.core.lifecycle import STAGES

HOOK_TIMEOUT = 10.0  # seconds a hook may run before its process group is stopped
LAST_LINE_MAX = 300  # characters of a hook's last stderr line kept
_KEYS = ("on_stage", "on_alert", "timeout")
_EXAMPLE = "expected {on_stage: {failed: CMD, ...}, on_alert: CMD, timeout: 10s}"


@dataclass(frozen=True, slots=True)
class HookSettings:
    """aq.yaml `hooks:`: a shell command per stage a job moves to, one for alerts, and how long
    each may run."""

    on_stage: Mapping[str, str] = field(default_factory=dict)  # stage -> command
    on_alert: str | None = None
    timeout: float = HOOK_TIMEOUT


def parse_hooks(raw: object) -> HookSettings | None:
    """`hooks:` of aq.yaml; None when absent. A ValueError names the key and what was expected
    (the config loader adds the file)."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValueError(f"key 'hooks': {_EXAMPLE}")
    for key in raw:
        if key not in _KEYS:
            raise ValueError(f"unknown key 'hooks.{key}'{_near(str(key), _KEYS)}; "
                             f"known: {', '.join(_KEYS)}")
    stages = raw.get("on_stage") or {}
    if not isinstance(stages, dict):
        raise ValueError("key 'hooks.on_stage': expected a mapping of stages to commands, "
                         "such as {failed: notify-send aq \"$AQ_JOB_ID failed\"}")
    on_stage: dict[str, str] = {}
    for stage, command in stages.items():
        if str(stage) not in STAGES:
            raise ValueError(f"unknown stage 'hooks.on_stage.{stage}'{_near(str(stage), STAGES)}; "
                             f"stages: {', '.join(STAGES)}")
        on_stage[str(stage)] = _command(f"hooks.on_stage.{stage}", command)
    on_alert = raw.get("on_alert")
    timeout = HOOK_TIMEOUT
    if raw.get("timeout") is not None:
        try:
            timeout = parse_duration(raw["timeout"])
        except ValueError as err:
            raise ValueError(f"key 'hooks.timeout': {err}") from None
        if timeout <= 0:
            raise ValueError("key 'hooks.timeout': a time longer than 0s, such as 10s")
    return HookSettings(on_stage, None if on_alert is None else _command("hooks.on_alert", on_alert),
                        timeout)


def _command(key: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"key '{key}': expected a shell command (text), got {value!r}")
    return value


def _near(word: str, known: tuple[str, ...]) -> str:
    import difflib  # only for a misspelt key

    close = difflib.get_close_matches(word, known, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


@dataclass(frozen=True, slots=True)
class HookRun:
    """One hook run: which hook, how it ended (its exit code, "timeout", or "missing": no shell
    to run it), how long it took and the last line it wrote on stderr."""

    hook: str  # "on_stage.failed", "on_alert"
    exit: int | str
    seconds: float
    last_line: str = ""

    @property
    def ok(self) -> bool:
        return self.exit == 0

    def complaint(self, timeout: float) -> str | None:
        """The one line a person is told of a hook that did not succeed; None when it did."""
        if self.ok:
            return None
        said = f": {self.last_line}" if self.last_line else ""
        if self.exit == "timeout":
            return f"hook {self.hook} stopped after its timeout of {timeout:g}s{said}"
        if self.exit == "missing":
            return f"hook {self.hook} could not start{said}"
        return f"hook {self.hook} exited {self.exit}{said}"

    def fields(self) -> dict[str, Any]:
        """What a `hook` event records of the run."""
        return {"hook": self.hook, "exit": self.exit, "seconds": round(self.seconds, 3),
                **({"stderr": self.last_line} if self.last_line else {})}


def run_hook(hook: str, command: str, payload: Mapping[str, Any], env: Mapping[str, str], *,
             cwd: Path, timeout: float, clock: Callable[[], float] = time.monotonic) -> HookRun:
    """Run one hook to its end or its timeout: `payload` as JSON on its stdin, `env` over the
    user's environment. Never raises for what the hook does."""
    from aq.core.scrub import Scrubber
    from aq.infra import proc  # lazily: the config loader imports this module for its settings

    start = clock()
    try:
        done = proc.run(["/bin/sh", "-c", command], cwd=cwd, env=proc.clean_env(dict(env)),
                        input=json.dumps(payload, ensure_ascii=False, default=str) + "\n",
                        timeout=timeout)
    except (OSError, ValueError) as err:  # no shell here, or a NUL in the command
        return HookRun(hook, "missing", clock() - start,
                       f"/bin/sh: {getattr(err, 'strerror', None) or err}")
    seconds = clock() - start
    stderr = done.stderr
    stopped = f"/bin/sh: no answer in {timeout:g}s; stopped\n"  # proc.run's note of a stop
    timed_out = done.returncode == proc.TIMED_OUT and stderr.endswith(stopped)
    if timed_out:  # aq's own note is not the hook's last word
        stderr = stderr.removesuffix(stopped)
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    # a webhook's URL is as good as a password: a recorded line never carries it
    last = Scrubber(os.environ, ("AQ_WEBHOOK_URL",)).line(lines[-1])[:LAST_LINE_MAX] if lines else ""
    return HookRun(hook, "timeout" if timed_out else done.returncode, seconds, last)
