"""`aq mcp`: the queue's tools (aq.ui.mcp.tools) served over stdio with the official MCP SDK.

stdout is the protocol's wire: the SDK points fd 1 at stderr while it serves, so a stray print
or a child's output cannot corrupt it, and aq's own words go to stderr. A tool that fails
answers an error result in one line (aq's own, for an AqError) and the server goes on."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.types import CallToolResult, InputRequiredResult, TextContent, Tool
from pydantic import ValidationError

import aq
from aq.errors import AqError
from aq.store.queue import Queue
from aq.ui.mcp.tools import QueueTools

INSTRUCTIONS = ("aq: a job queue for coding agents kept in a git repository. A job moves "
                "inbox -> building -> review -> testing -> shipped (or failed, dead_letter); "
                "workers run it, people and agents review and move it.")

log = logging.getLogger("aq.mcp")


class AqServer(MCPServer[Any]):
    """The SDK's server, with two house rules: one tool call at a time (they share one clone),
    and every failure answered in one line."""

    def __init__(self) -> None:
        super().__init__("aq", version=aq.__version__, instructions=INSTRUCTIONS,
                         log_level="WARNING")
        self._turn = anyio.Lock()
        self._parameters: dict[str, frozenset[str]] | None = None  # each tool's, once listed

    async def call_tool(self, name: str, arguments: dict[str, Any],
                        context: Context[Any, Any] | None = None
                        ) -> CallToolResult | InputRequiredResult:
        async with self._turn:
            known = await self._parameters_of(name)
            unknown = sorted(set(arguments) - known) if known is not None else []
            if unknown:  # refused, not dropped: `timeout: 5x` must not add a job without one
                return _refused(f"{name}: unknown argument {unknown[0]!r}; " + (
                    f"known: {', '.join(sorted(known))}" if known else "it takes none"))
            try:
                return await super().call_tool(name, arguments, context)
            except ToolError as err:
                return _error(name, err)

    async def _parameters_of(self, name: str) -> frozenset[str] | None:
        """The arguments tool `name` takes (None: no such tool, which the SDK answers)."""
        if self._parameters is None:
            self._parameters = {tool.name: frozenset(tool.input_schema.get("properties") or ())
                                for tool in await super().list_tools()}
        return self._parameters.get(name)

    async def run_stdio_async(self) -> None:
        """As the SDK's, but a line that is no JSON-RPC message is answered: the SDK passes it
        on as an exception its dispatcher drops, and the client got no reply at all. The answer
        is JSON-RPC's Parse error or Invalid Request (`_unreadable`), with the id null (the
        line's own cannot be told)."""
        from mcp.server.stdio import stdio_server
        from mcp.shared.message import SessionMessage
        from mcp_types import JSONRPCError

        async with stdio_server() as (read_stream, write_stream):
            send, receive = anyio.create_memory_object_stream[Any](0)

            async def pump() -> None:
                async with send:
                    async for item in read_stream:
                        if not isinstance(item, Exception):
                            await send.send(item)
                            continue
                        await write_stream.send(SessionMessage(JSONRPCError(
                            jsonrpc="2.0", id=None, error=_unreadable(item))))

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(pump)
                await self._lowlevel_server.run(
                    receive, write_stream, self._lowlevel_server.create_initialization_options())

    async def list_tools(self) -> list[Tool]:
        """The tools without the titles pydantic puts on every schema: words an agent pays for
        that say nothing the names do not."""
        return [tool.model_copy(update={"input_schema": _untitled(tool.input_schema)})
                for tool in await super().list_tools()]


def _error(name: str, err: ToolError) -> CallToolResult:
    """The failure of tool `name` as an error result of one line."""
    cause = err.__cause__
    if isinstance(cause, AqError):
        text = str(cause)
    elif isinstance(cause, ValidationError):
        text = f"{name}: " + "; ".join(
            f"{'.'.join(str(part) for part in problem['loc']) or 'arguments'}: {problem['msg']}"
            + (f" (got {_cut(repr(problem['input']))})" if problem["type"] != "missing" else "")
            for problem in cause.errors())
    elif isinstance(cause, OSError):  # as the CLI says it: the file and what went wrong
        text = f"{cause.filename or ''}: {cause.strerror or cause}".lstrip(": ")
    elif isinstance(err, UnexpectedToolError) and cause is not None:
        log.error("aq mcp: tool %s failed", name, exc_info=cause)
        text = f"internal error: {type(cause).__name__}: {cause}"
    else:  # the SDK's own: an unknown tool
        text = str(err)
    return _refused(text)


def _refused(text: str) -> CallToolResult:
    """An error result of one line."""
    line = " ".join(text.split())
    return CallToolResult(content=[TextContent(type="text", text=line)], is_error=True)


def _cut(text: str, width: int = 80) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _unreadable(err: Exception) -> Any:
    """JSON-RPC's answer to a line the SDK could not read: not JSON (a lone surrogate's escape
    too), or JSON that is no JSON-RPC 2.0 message."""
    from mcp_types import INVALID_REQUEST, PARSE_ERROR, ErrorData

    first = err.errors()[0] if isinstance(err, ValidationError) and err.errors() else None
    if first is not None and first["type"] == "json_invalid":
        return ErrorData(code=PARSE_ERROR, message=f"not JSON: {first['msg']}")
    return ErrorData(code=INVALID_REQUEST, message="not a JSON-RPC 2.0 request, notification "
                     "or response (an object with \"jsonrpc\": \"2.0\", and a method or a result)")


def _untitled(schema: Any) -> Any:
    """`schema` without its "title" strings (a property named "title" is a schema: kept)."""
    if isinstance(schema, list):
        return [_untitled(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    return {key: _untitled(value) for key, value in schema.items()
            if key != "title" or not isinstance(value, str)}


def build(queue: Queue, *, who: str, clock: Callable[[], datetime],
          env: Mapping[str, str]) -> AqServer:
    """The server of `queue`'s tools, recording what it does as `who`."""
    server = AqServer()
    for tool in QueueTools(queue, who=who, clock=clock, env=env).tools():
        # the docstring on one line: its indentation is words an agent pays for
        server.add_tool(tool, description=" ".join((tool.__doc__ or "").split()),
                        structured_output=False)
    return server


def serve(queue: Queue, *, who: str, clock: Callable[[], datetime]) -> None:
    """Serve `queue` over stdin/stdout until the client closes stdin."""
    print(f"aq mcp: serving {queue.root} over stdio (an MCP client talks to it; Ctrl-C ends)",
          file=sys.stderr, flush=True)
    build(queue, who=who, clock=clock, env=dict(os.environ)).run("stdio")
