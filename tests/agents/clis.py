"""The real agent CLIs that ./test.sh installs into .tools, and how to point each at a fake API.

`prepare(name, home, base_url)` writes the CLI's config under `home` and returns the whole
environment to run it with: PATH (with node), HOME=home, TMPDIR and XDG_* under home, and the
CLI's own variables below. It is not os.environ plus extras, so no real key or config of the
user's can leak in, and everything the CLI writes (config, sessions, logs, temp files) lands
under `home`. It works as root. `argv(name, yolo=...)` gives the command line.

What works, headless, JSON out, the prompt on stdin (which must reach EOF: codex waits for it):

claude: `claude -p --output-format stream-json --verbose [--dangerously-skip-permissions]`
    env ANTHROPIC_BASE_URL=URL ANTHROPIC_API_KEY CLAUDE_CONFIG_DIR=home/.claude IS_SANDBOX=1
    (root may not skip permissions without it) ANTHROPIC_MODEL (a known model, so the cost is
    priced) DISABLE_AUTOUPDATER DISABLE_TELEMETRY DISABLE_ERROR_REPORTING
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC. Prints JSONL ending with {"type": "result",
    "is_error", "api_error_status", "total_cost_usd", "usage", "modelUsage", "session_id",
    "num_turns", "permission_denials", ...}; exits 1 on an API error. Starts in about 0.5 s.
codex: `codex exec --json --skip-git-repo-check [--dangerously-bypass-approvals-and-sandbox] -`
    env CODEX_HOME=home/.codex (its config.toml names the model and a provider "fake" with
    base_url URL/v1, wire_api "responses", env_key FAKE_API_KEY, no retries) FAKE_API_KEY;
    OPENAI_BASE_URL is ignored. Prints JSONL: thread.started {thread_id}, turn.started, item.*,
    then turn.completed {usage: input_tokens, cached_input_tokens, cache_write_input_tokens,
    output_tokens, reasoning_output_tokens} or turn.failed {error: {message}} (exit 1).
    `exec` never asks for approval; the bypass flag lifts its sandbox (read-only by default).
    Starts in about 0.3 s.
gemini: `gemini --skip-trust --output-format stream-json [--approval-mode=yolo]`
    env GOOGLE_GEMINI_BASE_URL=URL GEMINI_API_KEY, and home/.gemini/settings.json: auth
    "gemini-api-key", a pinned model (with "auto" it first asks a router model on a side
    call), no auto-update, usage statistics, telemetry or IDE, one attempt per request (else a
    500 is retried for minutes). Prints JSONL: init, message (user, then assistant deltas),
    tool_use, tool_result, then {"type": "result", "status", "stats": {input_tokens,
    output_tokens, cached, input, total_tokens, models, ...}}; on an API error it exits with
    the HTTP status mod 256 (500 -> 244, 401 -> 145). Starts in about 2 s.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOLS_BIN = REPO / ".tools" / "node_modules" / ".bin"
NAMES = ("claude", "codex", "gemini")
FAKE_KEY = "fake-key-0123456789"
# Pinned model names: real names, so each CLI knows their metadata (context window, price).
CLAUDE_MODEL = "claude-sonnet-4-5"
CODEX_MODEL = "gpt-5.5"
GEMINI_MODEL = "gemini-2.5-flash"

ARGV = {
    "claude": ["-p", "--output-format", "stream-json", "--verbose"],
    "codex": ["exec", "--json", "--skip-git-repo-check"],
    "gemini": ["--skip-trust", "--output-format", "stream-json"],
}
YOLO = {
    "claude": ["--dangerously-skip-permissions"],
    "codex": ["--dangerously-bypass-approvals-and-sandbox"],
    "gemini": ["--approval-mode=yolo"],
}


def cli_path(name: str) -> Path | None:
    """The CLI installed in .tools, or None when it is not there (or, for a node script, when
    node is missing)."""
    path = TOOLS_BIN / name
    if not path.exists():
        return None
    if path.resolve().suffix == ".js" and not shutil.which("node"):
        return None
    return path


def require_cli(name: str) -> Path:
    """The CLI's path; skips the test when it is not installed."""
    path = cli_path(name)
    if path is None:
        pytest.skip(f"{name} is not installed: ./test.sh installs it from npm into .tools "
                    "(npm missing or offline?)")
    return path


def argv(name: str, *, yolo: bool = False) -> list[str]:
    """The whole command line for `name`, headless, JSON out, prompt read from stdin."""
    path = require_cli(name)
    tail = ["-"] if name == "codex" else []  # codex exec reads the prompt from stdin at "-"
    return [str(path), *ARGV[name], *(YOLO[name] if yolo else []), *tail]


def prepare(name: str, home: Path, base_url: str) -> dict[str, str]:
    """Write `name`'s config under `home` and return the environment that points it at the
    fake API on `base_url`: no prompts, no telemetry, no update checks, fine as root."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "tmp").mkdir(exist_ok=True)
    node_dir = str(Path(shutil.which("node") or "/usr/bin/node").parent)
    env = {
        "PATH": os.pathsep.join(dict.fromkeys(
            [str(TOOLS_BIN), node_dir, "/usr/local/bin", "/usr/bin", "/bin"])),
        "HOME": str(home),
        "USER": getpass.getuser(),
        "LANG": "C.UTF-8",
        "TMPDIR": str(home / "tmp"),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "NO_COLOR": "1",
    }
    if name == "claude":
        env.update(_claude(home, base_url))
    elif name == "codex":
        env.update(_codex(home, base_url))
    elif name == "gemini":
        env.update(_gemini(home, base_url))
    else:
        raise ValueError(f"unknown agent CLI {name!r}: expected one of {', '.join(NAMES)}")
    return env


def _claude(home: Path, base_url: str) -> dict[str, str]:
    config = home / ".claude"
    config.mkdir(exist_ok=True)
    return {
        "CLAUDE_CONFIG_DIR": str(config),
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": FAKE_KEY,
        "ANTHROPIC_MODEL": CLAUDE_MODEL,
        "IS_SANDBOX": "1",  # lets root use --dangerously-skip-permissions
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }


def _codex(home: Path, base_url: str) -> dict[str, str]:
    codex_home = home / ".codex"
    codex_home.mkdir(exist_ok=True)
    (codex_home / "config.toml").write_text(
        f'model = "{CODEX_MODEL}"\n'
        'model_provider = "fake"\n'
        "check_for_update_on_startup = false\n"
        "\n[analytics]\nenabled = false\n"
        "\n[model_providers.fake]\n"
        'name = "fake"\n'
        f"base_url = {json.dumps(base_url + '/v1')}\n"
        'wire_api = "responses"\n'
        'env_key = "FAKE_API_KEY"\n'
        "request_max_retries = 0\n"
        "stream_max_retries = 0\n"
    )
    return {"CODEX_HOME": str(codex_home), "FAKE_API_KEY": FAKE_KEY}


def _gemini(home: Path, base_url: str) -> dict[str, str]:
    settings = {
        "security": {"auth": {"selectedType": "gemini-api-key"}},
        "model": {"name": GEMINI_MODEL},
        "general": {"enableAutoUpdate": False, "enableAutoUpdateNotification": False,
                    "maxAttempts": 1},
        "privacy": {"usageStatisticsEnabled": False},
        "telemetry": {"enabled": False},
        "ide": {"enabled": False, "hasSeenNudge": True},
    }
    (home / ".gemini").mkdir(exist_ok=True)
    (home / ".gemini" / "settings.json").write_text(json.dumps(settings, indent=2))
    return {"GOOGLE_GEMINI_BASE_URL": base_url, "GEMINI_API_KEY": FAKE_KEY}
