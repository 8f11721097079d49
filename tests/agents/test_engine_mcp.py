"""A job with `mcp: true` gets aq's MCP server (`aq mcp`) in its engine's run, the way each real
CLI takes one: the real claude and codex CLIs, their shell tools taken away, run under `aq run`
against the fake model API, whose model spawns a child job through aq's `spawn_child` tool. A
job whose engine cannot take the server is refused at `aq add`, by `aq lint`, and at its
attempt, never run without it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from aq.core.manifest import parse_manifest
from tests.agents.clis import TOOLS_BIN, prepare, require_cli
from tests.agents.fake_model_api import (
    CLAUDE_SHELL,
    CODEX_SHELLS,
    Answer,
    FakeModelAPI,
    Reply,
    ToolSearch,
    ToolUse,
)
from tests.helpers.cli import run_aq
from tests.helpers.queue import events, make_queue, stage_of, write_job

CHILD_BODY = "Write the parser's tests."
# Each CLI with its shell tool taken away (and aq's `{mcp}` group where codex needs it placed):
# whatever the agent does to the queue, it does through aq's MCP server.
NO_SHELL = {
    "claude": "claude -p --output-format stream-json --verbose --disallowedTools Bash",
    "codex": "codex exec --json --skip-git-repo-check --disable shell_tool --disable unified_exec "
             "{yolo} {mcp} {resume} -",
}


def agent_queue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: str) -> Path:
    """A queue whose default engine is `cli`, its built-in entry with a cmd of no shell."""
    root = make_queue(tmp_path / "q", monkeypatch)
    config = root / "aq.yaml"
    config.write_text(config.read_text().replace("default_engine: shell", f"default_engine: {cli}")
                      + f"\nengines:\n  {cli}:\n    cmd: {json.dumps(NO_SHELL[cli])}\n")
    return root


def agent_env(cli: str, tmp_path: Path, api: FakeModelAPI) -> dict[str, str]:
    env = prepare(cli, tmp_path / f"home-{cli}", api.url)
    env["PATH"] = f"{TOOLS_BIN}{os.pathsep}{env.get('PATH', os.defpath)}"
    return env


def spawn_script(cli: str) -> list[Answer]:
    """The model's turns: spawn the child through aq's tool, then end. codex offers an MCP
    server's tools only once its tool search found them (for models that search, as gpt-5.5)."""
    spawn = ToolUse("spawn_child", {"body": CHILD_BODY, "title": "Parser tests"})
    return [*([ToolSearch("spawn a child job")] if cli == "codex" else []), spawn, Reply("done")]


def tool_names(body: Any) -> set[str]:
    """The tools a turn request offered the model, namespaces' tools too."""
    names = set()
    for tool in body.get("tools") or []:
        names.add(tool.get("name") or tool.get("type"))
        names.update(inner.get("name") for inner in tool.get("tools") or [])
    return names


@pytest.mark.slow
@pytest.mark.parametrize("cli", ["claude", "codex"])
def test_an_agent_without_a_shell_spawns_a_child_through_aqs_mcp_server(
        cli: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job with mcp: true, not yolo, on a CLI with no shell tool: the model calls spawn_child,
    the CLI runs it without asking (aq's tools are allowed), the child is in the inbox with the
    job as its parent, the model gets the tool's answer, and the log says the server was
    given. The job then waits for its child."""
    require_cli(cli)
    root = agent_queue(tmp_path, monkeypatch, cli)
    write_job(root, "manager", "Split the parser work into child jobs.", mcp=True)
    with FakeModelAPI(*spawn_script(cli)) as api:
        ran = run_aq("run", "--once", "--poll", "0.2", cwd=root, timeout=300,
                     env=agent_env(cli, tmp_path, api))
        turns = [turn.body for turn in api.turns]
    log = (root / "queue" / ".logs" / "manager" / "1.log").read_text()
    assert ran.returncode == 0, ran.stdout + ran.stderr + log[-3000:]
    shells = {CLAUDE_SHELL} if cli == "claude" else set(CODEX_SHELLS)
    assert turns and all(not tool_names(body) & shells for body in turns), "a shell was offered"
    children = [path for path in (root / "queue" / "inbox").glob("*.md") if path.stem != "manager"]
    assert len(children) == 1, log[-3000:]
    child = parse_manifest(children[0].stem, children[0].read_text(), str(children[0]))
    assert (child.parent, child.body.strip(), child.title) == (
        "manager", CHILD_BODY, "Parser tests")
    answer = json.dumps(f'{{"id":"{child.id}","parent":"manager","created":true}}')[1:-1]
    assert any(answer in json.dumps(body) for body in turns[1:]), "the model never got the answer"
    if cli == "claude":  # claude names an MCP server's tools mcp__<server>__<tool>
        assert "mcp__aq__spawn_child" in tool_names(turns[0])
    assert f"mcp: engine {cli} is given aq's MCP server 'aq'" in log
    finished = events(root, "manager", "finished")[-1]
    assert (finished["outcome"], stage_of(root, "manager")) == ("awaiting_children", "inbox")


SLOW_START = """\
import sys, time
if "mcp" in sys.argv:  # aq's MCP server, as on a busy machine: slower than claude's 5 s wait
    time.sleep(8)
"""


@pytest.mark.slow
def test_claude_waits_for_an_mcp_server_slow_to_start(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Under load `aq mcp` once took longer than claude -p waits for an --mcp-config server by
    default (5 s), and the agent ran its turn without spawn_child. Here it starts 8 s late (a
    sitecustomize on its PYTHONPATH sleeps): the real claude waits, and the child is made."""
    require_cli("claude")
    root = agent_queue(tmp_path, monkeypatch, "claude")
    slow = tmp_path / "slow"
    slow.mkdir()
    (slow / "sitecustomize.py").write_text(SLOW_START)
    write_job(root, "manager", "Split the parser work into child jobs.", mcp=True)
    with FakeModelAPI(*spawn_script("claude")) as api:
        env = agent_env("claude", tmp_path, api)
        env["PYTHONPATH"] = os.pathsep.join([str(slow), str(Path(__file__).resolve().parents[2])])
        ran = run_aq("run", "--once", "--poll", "0.2", cwd=root, timeout=300, env=env)
    log = (root / "queue" / ".logs" / "manager" / "1.log").read_text()
    assert ran.returncode == 0, ran.stdout + ran.stderr + log[-3000:]
    children = [path for path in (root / "queue" / "inbox").glob("*.md") if path.stem != "manager"]
    assert len(children) == 1, log[-3000:]


def test_add_refuses_a_job_with_mcp_on_an_engine_that_cannot_take_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """aider has no MCP, and gemini takes servers only from the user's or the project's
    settings: `aq add` says so in one line naming the engine; the same job on claude is added."""
    root = make_queue(tmp_path / "q", monkeypatch)
    for engine in ("aider", "gemini"):
        ran = run_aq("add", "-", cwd=root,
                     input=f"---\nengine: {engine}\nmcp: true\n---\nSplit it.\n")
        assert ran.returncode == 1, ran.stdout
        assert f"key 'mcp': engine {engine!r} cannot take aq's MCP server" in ran.stderr
        assert len(ran.stderr.strip().splitlines()) == 1 and "Traceback" not in ran.stderr
    ran = run_aq("add", "-", cwd=root, input="---\nengine: claude\nmcp: true\n---\nSplit it.\n")
    assert ran.returncode == 0, ran.stderr


def test_lint_names_a_job_whose_engine_or_ladder_cannot_take_mcp(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job dropped in by hand is judged by `aq lint`: the queue's default engine (shell here)
    and each engine of its escalation ladder."""
    root = make_queue(tmp_path / "q", monkeypatch)
    write_job(root, "by-default", "Split it.", mcp=True)
    write_job(root, "laddered", "Split it.", mcp=True, engine="claude",
              retry={"escalate": ["claude", "aider"]})
    write_job(root, "fine", "Split it.", mcp=True, engine="codex")
    ran = run_aq("lint", cwd=root)
    assert ran.returncode == 1
    said = ran.stdout + ran.stderr
    assert "by-default.md: key 'mcp': engine 'shell' cannot take aq's MCP server" in said
    assert "laddered.md: key 'mcp': engine 'aider' cannot take aq's MCP server" in said
    assert "fine.md" not in said


def test_an_attempt_on_an_engine_that_cannot_take_mcp_ends_without_running_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Added with --force (or on a worker whose aq.yaml differs), the job's attempt ends
    engine_missing with the one line naming the engine, and its engine never starts."""
    root = make_queue(tmp_path / "q", monkeypatch)
    ran_marker = tmp_path / "ran"
    write_job(root, "script", f"touch {ran_marker}", mcp=True)
    ran = run_aq("run", "--once", "--poll", "0.2", cwd=root)
    assert ran.returncode == 0, ran.stderr
    finished = events(root, "script", "finished")[-1]
    assert finished["outcome"] == "engine_missing", finished
    assert finished["detail"].startswith("engine 'shell' cannot take aq's MCP server (mcp: true)")
    assert not ran_marker.exists() and stage_of(root, "script") == "failed"
