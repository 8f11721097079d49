"""`aq mcp`: the server `aq mcp` builds, serving a real queue, driven by the MCP SDK's own client
as an agent's would be. Each test pins what a tool answers, what it changes in the queue, and
that a failure is an error result in aq's own words, never a dead server.

What a tool answers is the same in a process as in this one, and a start of `python -m aq mcp`
(with the SDK's import, ~1 s) costs more than a test's calls: so tests of the tools talk to the
server in this process, over the SDK's in-memory transport (the same JSON-RPC messages and
handshake as stdio). What only a process shows keeps a real `python -m aq mcp`: the stdio client
end to end (`over="stdio"`), the end of input, no queue here, and an agent in a job's attempt
(AQ_JOB_ID) spawning through the server it started."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar

import pytest
from mcp import Client, ClientSession, StdioServerParameters, stdio_client
from mcp.types import CallToolResult, TextContent

from aq.infra.clock import utc_now
from aq.store.queue import Queue
from aq.ui.mcp.server import build
from aq.usecases.setup import who_am_i
from tests.helpers.cli import aq_env, run_aq
from tests.helpers.fleet import fleet_in
from tests.helpers.git import git
from tests.helpers.queue import events, stage_of, write_job

TOOLS = {"add_job", "spawn_child", "list_jobs", "show_job", "job_log", "move_job", "next_job"}
WAIT = 60.0  # seconds a request may take on a busy machine before the test fails
T = TypeVar("T")


@asynccontextmanager
async def over_stdio(root: Path) -> AsyncIterator[ClientSession]:
    """A session with a `python -m aq mcp` process serving the queue at `root`; its stderr is
    kept beside it."""
    params = StdioServerParameters(command=sys.executable, args=["-m", "aq", "mcp"],
                                   env=aq_env(), cwd=root)
    with (root.parent / "mcp-stderr.txt").open("w") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write), \
                ClientSession(read, write, read_timeout_seconds=WAIT) as session:
            await session.initialize()
            yield session


@asynccontextmanager
async def in_memory(root: Path) -> AsyncIterator[ClientSession]:
    """A session with the server `aq mcp` would build for the queue at `root` (same tools, same
    `who`, clock and environment), in this process; the same initialize handshake as stdio."""
    server = build(Queue(root), who=f"{who_am_i()} via mcp", clock=utc_now, env=aq_env())
    async with Client(server, mode="legacy", read_timeout_seconds=WAIT, cache=None) as client:
        yield client.session


def talk(root: Path, script: Callable[[ClientSession], Awaitable[T]],
         over: Literal["memory", "stdio"] = "memory") -> T:
    """Run `script` against a server of the queue at `root` (in this process, or a
    `python -m aq mcp` with `over="stdio"`), and what it returned."""
    connected = over_stdio if over == "stdio" else in_memory

    async def run() -> T:
        async with connected(root) as session:
            return await script(session)

    return asyncio.run(run())


async def call(session: ClientSession, tool: str, **arguments: Any) -> CallToolResult:
    result = await session.call_tool(tool, arguments)
    assert isinstance(result, CallToolResult)
    return result


def text(result: CallToolResult) -> str:
    (block,) = result.content
    assert isinstance(block, TextContent)
    return block.text


def answer(result: CallToolResult) -> Any:
    assert not result.is_error, text(result)
    return json.loads(text(result))


def refusal(result: CallToolResult) -> str:
    assert result.is_error, text(result)
    assert "\n" not in text(result) and "Traceback" not in text(result)
    return text(result)


def test_it_lists_exactly_its_tools_each_said_in_a_sentence_or_two(queue_root: Path) -> None:
    """Seven tools, each described briefly, their schemas free of pydantic's titles."""
    async def script(session: ClientSession) -> Any:
        return (await session.list_tools()).tools

    tools = talk(queue_root, script)
    assert {tool.name for tool in tools} == TOOLS
    for tool in tools:
        assert tool.description and len(tool.description) < 300, tool.name
        assert '"title": "' not in json.dumps(tool.input_schema), tool.name
    listing = json.dumps([tool.model_dump(mode="json", exclude_none=True) for tool in tools])
    assert len(listing) < 6000  # what an agent pays for the tools, every session


def test_an_added_job_is_in_the_inbox_in_list_jobs_and_in_aq_ls(queue_root: Path) -> None:
    """add_job writes the job into queue/inbox, recorded as added by way of mcp; every listing
    and show_job see it."""
    async def script(session: ClientSession) -> tuple[Any, Any, Any]:
        added = answer(await call(session, "add_job", body="echo hi", title="Say hi",
                                  priority="high", verify="true"))
        listed = answer(await call(session, "list_jobs", stage="inbox"))
        shown = answer(await call(session, "show_job", job=added["id"]))
        return added, listed, shown

    added, listed, shown = talk(queue_root, script, over="stdio")
    job_id = added["id"]
    assert added["stage"] == "inbox" and added["created"] is True
    assert listed["jobs"] == [{"id": job_id, "stage": "inbox", "title": "Say hi",
                               "priority": "high", "ready": True}]
    assert stage_of(queue_root, job_id) == "inbox"
    assert [job["id"] for job in json.loads(run_aq("ls", "--json", cwd=queue_root).stdout)] == [job_id]
    assert shown["stage"] == "inbox" and shown["title"] == "Say hi" and shown["body"] == "echo hi"
    assert shown["priority"] == "high" and shown["resolved"]["verify"]["value"] == "true"
    assert shown["allowed_moves"] == ["cancel"]
    assert events(queue_root, job_id, "added")[0]["by"].endswith(" via mcp")


def test_a_move_is_made_and_recorded_as_by_way_of_mcp(queue_root: Path) -> None:
    """move_job cancel moves the job to failed, recorded with who moved it and why."""
    write_job(queue_root, "spare", "echo spare", title="Spare job")

    async def script(session: ClientSession) -> Any:
        return answer(await call(session, "move_job", job="spare", action="cancel",
                                 reason="not needed"))

    moved = talk(queue_root, script)
    assert {key: moved[key] for key in ("id", "from", "to", "action")} == {
        "id": "spare", "from": "inbox", "to": "failed", "action": "cancel"}
    assert stage_of(queue_root, "spare") == "failed"
    (event,) = events(queue_root, "spare", "moved")
    assert event["by"].endswith(" via mcp") and event["why"] == "canceled: not needed"


@pytest.mark.slow  # a fleet of clones, or a job that runs its own MCP server
def test_it_reads_and_moves_the_fleets_queue_fetched_from_the_remote(tmp_path: Path) -> None:
    """In a clone of a fleet's queue, a listing shows a job added in another clone, and a move
    fetches first: a job pushed a moment ago is found and moved, on the remote too."""
    with fleet_in(tmp_path, clones=1) as fleet:
        def add(title: str) -> str:
            ran = run_aq("add", "--body", "echo hi", "--title", title, cwd=fleet.seed)
            assert ran.returncode == 0, ran.stderr
            return ran.stdout.strip()

        async def script(session: ClientSession) -> tuple[str, Any, str, Any]:
            first = add("Added elsewhere")
            listed = answer(await call(session, "list_jobs"))
            second = add("Added just now")
            moved = answer(await call(session, "move_job", job=second, action="cancel"))
            return first, listed, second, moved

        first, listed, second, moved = talk(fleet.clones[0], script, over="stdio")
        assert [job["id"] for job in listed["jobs"]] == [first]
        assert moved["id"] == second and moved["to"] == "failed"
        assert fleet.stage(second) == "failed"
        assert fleet.events(second, "moved")[0]["by"].endswith(" via mcp")


def test_a_refused_move_is_an_error_in_aqs_own_words_and_changes_nothing(queue_root: Path) -> None:
    """Shipping a job from the inbox answers the lifecycle's one-line refusal; the job stays."""
    write_job(queue_root, "fresh", "echo fresh", title="Fresh job")
    git(queue_root, "add", "-A")
    git(queue_root, "commit", "-qm", "a job")
    head = git(queue_root, "rev-parse", "HEAD")

    async def script(session: ClientSession) -> str:
        return refusal(await call(session, "move_job", job="fresh", action="ship"))

    said = talk(queue_root, script)
    assert said == "cannot ship fresh: it is in inbox; from inbox a person may: cancel"
    assert stage_of(queue_root, "fresh") == "inbox"
    assert events(queue_root, "fresh", "moved") == []
    assert git(queue_root, "rev-parse", "HEAD") == head


def test_bad_arguments_are_errors_and_the_server_goes_on(queue_root: Path) -> None:
    """An unknown stage, an unknown job, a reject without a reason and a missing argument each
    answer an error of one line; the server answers the next call as before."""
    async def script(session: ClientSession) -> tuple[list[str], Any]:
        said = [refusal(await call(session, "list_jobs", stage="nowhere")),
                refusal(await call(session, "show_job", job="no-such-job")),
                refusal(await call(session, "move_job", job="x", action="reject")),
                refusal(await call(session, "add_job", title="no body"))]
        return said, answer(await call(session, "list_jobs"))

    (stage, job, reject, body), listed = talk(queue_root, script)
    assert stage.startswith("list_jobs: stage: ") and "'nowhere'" in stage and "dead_letter" in stage
    assert "no-such-job" in job
    assert reject == "a reject needs a reason: say why"
    assert body == "add_job: body: Field required"
    assert listed == {"jobs": []}


def test_an_unknown_argument_is_refused_not_dropped(queue_root: Path) -> None:
    """add_job with `timeout: "5x"` or `id: "BAD"` once added the job without them, silently."""
    async def script(session: ClientSession) -> tuple[str, str, Any]:
        said = refusal(await call(session, "add_job", body="echo hi", timeout="5x"))
        bare = refusal(await call(session, "next_job", worker="me"))
        return said, bare, answer(await call(session, "list_jobs"))

    said, bare, listed = talk(queue_root, script)
    assert said.startswith("add_job: unknown argument 'timeout'; known: body, deps, "), said
    assert bare == "next_job: unknown argument 'worker'; it takes none"  # was "known: " and nothing
    assert listed == {"jobs": []}


def test_a_tool_that_crashes_answers_an_internal_error_in_one_line(queue_root: Path) -> None:
    """Anything but an AqError is an error result "internal error: ..." and the server goes
    on (in-process: a tool made to crash, beside the real ones)."""
    server = build(Queue(queue_root), who="tester via mcp", clock=utc_now, env={})

    def crash() -> str:
        """Always fails."""
        raise RuntimeError("no luck\ntoday")

    server.add_tool(crash)

    async def script() -> tuple[Any, Any]:
        return await server.call_tool("crash", {}), await server.call_tool("list_jobs", {})

    crashed, listed = asyncio.run(script())
    assert refusal(crashed) == "internal error: RuntimeError: no luck today"
    assert answer(listed) == {"jobs": []}


def test_job_log_answers_the_end_of_the_log_of_a_run_attempt(queue_root: Path) -> None:
    """The log of a job `aq run` ran, latest attempt by default, cut to its last 20,000
    characters saying so; an attempt it never had is an error."""
    write_job(queue_root, "hello", "echo hello from the job", title="Hello")
    write_job(queue_root, "long", "echo start; head -c 30000 /dev/zero | tr '\\0' x; echo; "
              "echo the end", title="Long")
    git(queue_root, "add", "-A")
    git(queue_root, "commit", "-qm", "jobs")
    ran = run_aq("run", "--drain", cwd=queue_root)
    assert ran.returncode == 0, ran.stderr

    async def script(session: ClientSession) -> tuple[str, str, str]:
        hello, long = [await call(session, "job_log", job=job) for job in ("hello", "long")]
        assert not hello.is_error and not long.is_error, (text(hello), text(long))
        return text(hello), text(long), refusal(await call(session, "job_log", job="hello",
                                                            attempt=2))

    hello, long, missing = talk(queue_root, script)
    assert hello.startswith("[hello attempt 1, ended]\n") and "hello from the job" in hello
    head, tail = long.split("\n", 1)
    assert head.startswith("[long attempt 1, ended; its first ") and head.endswith(" bytes left out]")
    assert len(tail) == 20_000 and "start" not in tail and "the end" in tail
    assert missing == "hello has attempts 1 to 1; --attempt 2 is not one of them"


def test_a_long_listing_is_cut_saying_how_many_were_left_out(queue_root: Path) -> None:
    """list_jobs answers the first 200 jobs and the count of the rest."""
    for n in range(205):
        write_job(queue_root, f"job-{n:03}", "echo hi", title=f"Job {n}")
    git(queue_root, "add", "-A")
    git(queue_root, "commit", "-qm", "many jobs")

    async def script(session: ClientSession) -> Any:
        return answer(await call(session, "list_jobs", stage="inbox"))

    listed = talk(queue_root, script)
    assert len(listed["jobs"]) == 200 and listed["left_out"] == 5


def test_next_job_says_what_runs_next_and_why_the_others_wait(queue_root: Path) -> None:
    """A job that depends on another waits for it; next_job takes the other."""
    async def script(session: ClientSession) -> tuple[str, Any]:
        first = answer(await call(session, "add_job", body="echo one", title="First"))["id"]
        await call(session, "add_job", body="echo two", title="Second", deps=[first])
        return first, answer(await call(session, "next_job"))

    first, chosen = talk(queue_root, script)
    assert chosen["next"]["id"] == first and chosen["halted"] is None
    (waiting,) = chosen["passed_over"]
    assert waiting["ready"] is False and first in waiting["reason"]


def test_the_server_ends_cleanly_when_its_client_closes_stdin(queue_root: Path) -> None:
    """On end of input the server exits 0, having written nothing but the protocol on stdout."""
    server = subprocess.Popen([sys.executable, "-m", "aq", "mcp"], cwd=queue_root, env=aq_env(),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    assert server.stdin is not None and server.stdout is not None
    try:
        for message in (
            {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "test", "version": "0"}}},
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
             "params": {"name": "list_jobs", "arguments": {}}},
        ):
            server.stdin.write(json.dumps(message) + "\n")
            server.stdin.flush()
            if "id" in message:
                reply = json.loads(server.stdout.readline())
                assert reply["id"] == message["id"] and "result" in reply, reply
        server.stdin.close()
        assert server.wait(timeout=WAIT) == 0
        assert server.stdout.read() == ""
        assert "Traceback" not in (server.stderr.read() if server.stderr else "")
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_outside_a_queue_it_says_so_in_one_line(tmp_path: Path) -> None:
    """No queue here: aq's one-line error and exit status 1, nothing on stdout."""
    ran = run_aq("mcp", cwd=tmp_path)
    assert ran.returncode == 1 and ran.stdout == ""
    assert ran.stderr.startswith("aq: ") and len(ran.stderr.splitlines()) == 1, ran.stderr


# An agent inside a job's attempt: it starts `aq mcp` (which inherits the attempt's AQ_JOB_ID and
# AQ_QUEUE) and spawns two children through it, the first twice.
SPAWNING_AGENT = """
import asyncio, json, os, sys
from mcp import ClientSession, StdioServerParameters, stdio_client

async def main():
    params = StdioServerParameters(command=sys.executable, args=["-m", "aq", "mcp"],
                                   env=dict(os.environ))
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        for body in ("echo one", "echo one", "echo two"):
            result = await session.call_tool("spawn_child", {"body": body})
            assert not result.is_error, result.content[0].text
            print(result.content[0].text)

asyncio.run(main())
"""


@pytest.mark.slow  # a fleet of clones, or a job that runs its own MCP server
def test_a_running_job_spawns_children_through_mcp_once_each(queue_root: Path,
                                                            tmp_path: Path) -> None:
    agent = tmp_path / "agent.py"
    agent.write_text(SPAWNING_AGENT)
    write_job(queue_root, "parent", f"{sys.executable} {agent}", verify="true")
    ran = run_aq("run", "--drain", cwd=queue_root)
    assert ran.returncode == 0, ran.stderr
    said = [json.loads(line) for line in
            (queue_root / "queue" / ".logs" / "parent" / "1.log").read_text().splitlines()
            if line.startswith("{")]
    assert [s["created"] for s in said] == [True, False, True]
    assert said[0]["id"] == said[1]["id"] != said[2]["id"]
    assert all(s["parent"] == "parent" for s in said)
    assert stage_of(queue_root, "parent") == "testing"  # waited for both, then its verify
    assert [e["action"] for e in events(queue_root, "parent", "finished")] == ["await", "pass"]


def test_spawn_child_outside_a_job_needs_its_parent(queue_root: Path) -> None:
    write_job(queue_root, "parent", "echo parent")

    async def script(session: ClientSession) -> tuple[str, Any]:
        orphan = refusal(await call(session, "spawn_child", body="echo kid"))
        named = answer(await call(session, "spawn_child", body="echo kid", parent="parent"))
        return orphan, named

    orphan, named = talk(queue_root, script)
    assert "needs its parent" in orphan
    assert named["parent"] == "parent" and named["created"]


def test_a_line_that_is_no_json_rpc_message_is_answered_and_the_server_goes_on(
        queue_root: Path) -> None:
    """Malformed JSON, an array, jsonrpc "1.0" or a lone surrogate's escape got no reply at
    all (the SDK's dispatcher drops what it cannot read): a client waited for ever. Each now
    gets JSON-RPC's error with the id null, and the next request its answer."""
    hello = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    lines = [json.dumps(hello), json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}),
             "not json", "[1, 2]", json.dumps({"jsonrpc": "1.0", "id": 5, "method": "tools/list"}),
             '{"jsonrpc": "2.0", "id": 7, "method": "tools/list", "params": {"x": "\\ud800"}}',
             json.dumps({"jsonrpc": "2.0", "id": 8, "method": "tools/list"})]
    server = subprocess.Popen([sys.executable, "-m", "aq", "mcp"], cwd=queue_root, env=aq_env(),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    assert server.stdin is not None and server.stdout is not None
    stuck = threading.Timer(120, server.kill)  # a server that never answers ends the reading
    stuck.start()
    try:
        server.stdin.write("\n".join(lines) + "\n")
        server.stdin.flush()
        answers = []
        while not answers or answers[-1].get("id") != 8:  # the last request's answer ends it
            line = server.stdout.readline()
            assert line, server.communicate(timeout=60)[1]
            answers.append(json.loads(line))
        server.stdin.close()
        server.wait(timeout=60)
    finally:
        stuck.cancel()
        server.kill()
    errors = [(a["id"], a["error"]["code"]) for a in answers if "error" in a]
    assert errors == [(None, -32700), (None, -32600), (None, -32600), (None, -32700)], answers
    assert "tools" in answers[-1]["result"]
