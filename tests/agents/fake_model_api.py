"""A local stand-in for the model APIs of the real agent CLIs, scripted turn by turn by the test.

One server speaks all three, routed by path:
- Anthropic Messages (claude): `POST /v1/messages`, an SSE stream when the body says `stream`
  (message_start, content_block_start/delta/stop, message_delta with usage, message_stop), else
  one JSON message; `POST /v1/messages/count_tokens`;
- OpenAI Responses (codex): `POST /v1/responses`, always SSE (response.created,
  response.output_item.added, response.output_text.delta, response.output_item.done,
  response.completed with usage);
- Gemini (gemini): `POST /v1beta/models/MODEL:streamGenerateContent?alt=sse` (SSE chunks of
  candidates, `usageMetadata` on the last), `:generateContent` (one JSON), `:countTokens`.
Anything else (claude's `HEAD /` probe at start, GET probes, unknown paths) is recorded as kind
"other" and answered 200 `{}`; `GET .../models` gets an empty model list.

The test scripts the model with `api.script(*replies)` (or the constructor): each turn request
takes the next reply (`Reply`, `ToolCall`, `ToolUse`, `ToolSearch`, `Error`, `Slow`) and, once
the script has run out, the last one again. A turn request is one that offers the model tools
(`tools` in the body): every CLI sends its tools on the agent's own turns and none on its side
calls (gemini's model router on `:generateContent` when the model is "auto", its next-speaker
check, claude's title/topic calls on a small model, count_tokens), so side calls take nothing
from the script.
A side call gets the current reply's text (or "ok" when that is a tool call or an error; a
value fitting the schema when gemini asks for JSON) and zero usage, so the totals a CLI prints
are exactly the sum of the scripted usages.

Usage goes out exactly as scripted, in each API's own fields and meaning: `input` is
Anthropic's `input_tokens` (which excludes cache reads and writes), OpenAI's `input_tokens` and
Gemini's `promptTokenCount` (both of which include the cached part); `cache_read` is
`cache_read_input_tokens` / `input_tokens_details.cached_tokens` / `cachedContentTokenCount`;
`cache_write` is `cache_creation_input_tokens` / `input_tokens_details.cache_write_tokens` (which
codex prints as cache_write_input_tokens; Gemini has none); `reasoning` is
`output_tokens_details.reasoning_tokens` / `thoughtsTokenCount` (Anthropic has none).

Errors come in each API's error shape. Anthropic's carry `x-should-retry: false`, as the real
API can: without it claude retries a 500 or a 401 with backoff for minutes. codex and gemini
retry errors too; `clis.prepare` turns their retries off (`request_max_retries = 0`,
`general.maxAttempts = 1`).
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, NamedTuple
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Usage:
    """Token counts one reply reports (each API's fields: see the module docstring)."""

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0
    reasoning: int = 0


@dataclass(frozen=True)
class Reply:
    """The model answers with text and ends its turn."""

    text: str = "done"
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True)
class ToolCall:
    """The model asks the agent to run `command` with its shell tool (claude's `Bash`, codex's
    `exec_command`, gemini's `run_shell_command`); the agent's next request, with the command's
    output, takes the next reply."""

    command: str
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True)
class ToolUse:
    """The model calls the tool `name` with `arguments`: the tool the CLI offers by that name,
    or by a longer one ending in `_name` or `-name` (an MCP server's tool, as claude spells it:
    `mcp__aq__spawn_child`; copilot: `aq-spawn_child`), or inside a namespace (codex:
    `spawn_child` in `mcp__aq`, offered at once or found by a `ToolSearch`); the agent's next
    request, with the result, takes the next reply."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True)
class ToolSearch:
    """The model calls codex's `tool_search` with `query` (codex keeps an MCP server's tools out
    of the request until a search finds them, for the models that can search); codex answers it
    itself, and its next request, with the tools found, takes the next reply. The other APIs
    get `query` as the reply's text."""

    query: str
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True)
class Error:
    """The API answers with an HTTP error status and an error body in its own shape."""

    status: int = 500
    message: str = "fake error"


@dataclass(frozen=True)
class Slow:
    """Like `Reply`, but the stream trickles: one word every `seconds_per_chunk`."""

    text: str
    seconds_per_chunk: float = 1.0
    usage: Usage = field(default_factory=Usage)


Answer = Reply | ToolCall | ToolUse | ToolSearch | Error | Slow


class Request(NamedTuple):
    """One request as received: the API it spoke ("anthropic", "openai", "gemini" or "other"),
    its path without the query, and its parsed JSON body (None when empty or not JSON)."""

    kind: str
    path: str
    body: Any


CLAUDE_SHELL = "Bash"
GEMINI_SHELL = "run_shell_command"
# codex's shell tool has had several names; the first one its `tools` offers is called.
CODEX_SHELLS = ("exec_command", "shell_command", "shell", "local_shell")


class FakeModelAPI:
    """`with FakeModelAPI(*replies) as api:` serves on `api.url` until the block ends."""

    def __init__(self, *replies: Answer) -> None:
        self.requests: list[Request] = []  # every request, in order of arrival
        self.turns: list[Request] = []  # the requests answered from the script
        self._lock = threading.Lock()
        self._script: list[Answer] = list(replies) or [Reply()]
        self._next = 0
        self._ids = itertools.count(1)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True  # a stream still trickling never holds up the exit
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        """The base URL, without a path: `http://127.0.0.1:PORT`."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FakeModelAPI:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def script(self, *replies: Answer) -> None:
        """Answer the next turn requests with `replies`, in order, then repeat the last."""
        with self._lock:
            self._script = list(replies) or [Reply()]
            self._next = 0

    def prompts(self) -> list[str]:
        """Every user-message text the model received (tool results aside), each once, in order
        of first arrival; the CLIs add texts of their own (system reminders, context)."""
        with self._lock:
            requests = list(self.requests)
        seen: dict[str, None] = {}
        for request in requests:
            for text in _user_texts(request):
                seen.setdefault(text, None)
        return list(seen)

    def take(self, request: Request, turn: bool) -> Answer:
        """Record `request` and pick its answer: the next scripted reply for a turn, the current
        one (without consuming it) for a side call."""
        with self._lock:
            self.requests.append(request)
            answer = self._script[min(self._next, len(self._script) - 1)]
            if turn:
                self.turns.append(request)
                self._next += 1
            return answer

    def new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):04d}"


def _user_texts(request: Request) -> Iterator[str]:
    body = request.body if isinstance(request.body, dict) else {}
    if request.kind == "anthropic":
        messages = [m for m in body.get("messages") or [] if m.get("role") == "user"]
        yield from _texts([m.get("content") for m in messages], ("text",))
    elif request.kind == "openai":
        items = body.get("input")
        if isinstance(items, str):
            yield items
            return
        messages = [i for i in items or [] if i.get("role") == "user"]
        yield from _texts([m.get("content") for m in messages], ("input_text", "text"))
    elif request.kind == "gemini":
        for content in body.get("contents") or []:
            if content.get("role", "user") == "user":
                yield from (part["text"] for part in content.get("parts") or [] if "text" in part)


def _texts(contents: list[Any], types: tuple[str, ...]) -> Iterator[str]:
    for content in contents:
        if isinstance(content, str):
            yield content
            continue
        yield from (block["text"] for block in content or [] if block.get("type") in types)


def _words(text: str) -> list[str]:
    return re.findall(r"\S+\s*|\s+", text) or [""]


def _tool_names(kind: str, body: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for tool in body.get("tools") or []:
        if kind == "gemini":
            names += [d.get("name", "") for d in tool.get("functionDeclarations") or []]
        else:
            names.append(tool.get("name") or tool.get("type") or "")
    return names


def _offered(kind: str, body: dict[str, Any], name: str) -> str:
    """The name the CLI offers the tool `name` by: itself, else the first that ends in `_name`
    or `-name` (copilot's `aq-spawn_child`)."""
    names = _tool_names(kind, body)
    return name if name in names else next(
        (offered for offered in names if offered.endswith((f"_{name}", f"-{name}"))), name)


def _openai_function(body: dict[str, Any], name: str) -> tuple[str | None, str]:
    """The namespace and name of the function `name` among the tools codex offers, at once or
    in the output of an earlier tool search (None: a function of no namespace)."""
    given = body.get("input")
    items: list[Any] = given if isinstance(given, list) else []
    found = [*(body.get("tools") or []),
             *(tool for item in items if item.get("type") == "tool_search_output"
               for tool in item.get("tools") or [])]
    for tool in found:
        if tool.get("type") == "namespace":
            if any(inner.get("name") == name for inner in tool.get("tools") or []):
                return tool.get("name"), name
        elif tool.get("name") == name or str(tool.get("name", "")).endswith(f"_{name}"):
            return None, tool["name"]
    return None, name


def _handler_for(api: FakeModelAPI) -> type[BaseHTTPRequestHandler]:
    return type("Handler", (_Handler,), {"api": api})


class _Handler(BaseHTTPRequestHandler):
    api: FakeModelAPI
    server_version = "fake-model-api/1"

    def log_message(self, format: str, *args: Any) -> None:  # the test reads `api.requests`
        pass

    # --- plumbing -------------------------------------------------------------------------

    def _body(self) -> Any:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return None

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _start_sse(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")  # the end of the stream is the end of the body
        self.end_headers()
        self.close_connection = True

    def _event(self, name: str | None, payload: Any) -> None:
        head = f"event: {name}\n" if name else ""
        self.wfile.write(f"{head}data: {json.dumps(payload)}\n\n".encode())
        self.wfile.flush()

    def _answer(self, kind: str, path: str, body: dict[str, Any]) -> tuple[Answer, bool]:
        turn = bool(_tool_names(kind, body))
        answer = self.api.take(Request(kind, path, body), turn)
        if turn:
            return answer, True
        return Reply(answer.text if isinstance(answer, Reply | Slow) else "ok"), False

    # --- routing --------------------------------------------------------------------------

    def do_HEAD(self) -> None:
        self.api.take(Request("other", urlsplit(self.path).path, None), turn=False)
        self._json(200, {})

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        self.api.take(Request("other", path, None), turn=False)
        self._json(200, {"object": "list", "data": [], "models": []}
                   if path.endswith("/models") else {})

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        body = self._body()
        fields = body if isinstance(body, dict) else {}
        routes: list[tuple[Callable[[str], bool], Callable[[str, dict[str, Any]], None]]] = [
            (lambda p: p.endswith("/messages/count_tokens"), self._anthropic_count),
            (lambda p: p.endswith("/messages"), self._anthropic),
            (lambda p: p.endswith("/responses"), self._openai),
            (lambda p: p.endswith(":countTokens"), self._gemini_count),
            (lambda p: p.endswith((":streamGenerateContent", ":generateContent")), self._gemini),
        ]
        try:
            for matches, serve in routes:
                if matches(path):
                    serve(path, fields)
                    return
            self.api.take(Request("other", path, body), turn=False)
            self._json(200, {})
        except (BrokenPipeError, ConnectionResetError):
            pass  # the CLI hung up (killed, or gave up): nothing left to answer

    # --- Anthropic Messages ---------------------------------------------------------------

    def _anthropic_count(self, path: str, body: dict[str, Any]) -> None:
        self.api.take(Request("anthropic", path, body), turn=False)
        self._json(200, {"input_tokens": 1})

    def _anthropic(self, path: str, body: dict[str, Any]) -> None:
        answer, _ = self._answer("anthropic", path, body)
        if isinstance(answer, Error):
            kinds = {400: "invalid_request_error", 401: "authentication_error",
                     403: "permission_error", 404: "not_found_error", 429: "rate_limit_error",
                     529: "overloaded_error"}
            self._json(answer.status, {"type": "error", "error": {
                "type": kinds.get(answer.status, "api_error"), "message": answer.message}},
                headers={"x-should-retry": "false"})
            return
        usage = {"input_tokens": answer.usage.input, "output_tokens": answer.usage.output,
                 "cache_creation_input_tokens": answer.usage.cache_write,
                 "cache_read_input_tokens": answer.usage.cache_read}
        message = {"id": self.api.new_id("msg_fake"), "type": "message", "role": "assistant",
                   "model": body.get("model", "claude-fake"), "stop_sequence": None}
        if isinstance(answer, ToolCall | ToolUse):
            name, arguments = ((CLAUDE_SHELL, {"command": answer.command,
                                               "description": "Run the command"})
                               if isinstance(answer, ToolCall)
                               else (_offered("anthropic", body, answer.name), answer.arguments))
            block: dict[str, Any] = {"type": "tool_use", "id": self.api.new_id("toolu_fake"),
                                     "name": name, "input": arguments}
            deltas = [{"type": "input_json_delta", "partial_json": json.dumps(arguments)}]
            stop = "tool_use"
        else:
            text = _text_of(answer)
            block = {"type": "text", "text": text}
            deltas = [{"type": "text_delta", "text": word} for word in _words(text)]
            stop = "end_turn"
        if not body.get("stream"):
            self._json(200, {**message, "content": [block], "stop_reason": stop, "usage": usage})
            return
        self._start_sse()
        self._event("message_start", {"type": "message_start", "message": {
            **message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 0}}})
        empty = ({**block, "input": {}} if isinstance(answer, ToolCall | ToolUse)
                 else {**block, "text": ""})
        self._event("content_block_start",
                    {"type": "content_block_start", "index": 0, "content_block": empty})
        for delta in deltas:
            _pause(answer)
            self._event("content_block_delta",
                        {"type": "content_block_delta", "index": 0, "delta": delta})
        self._event("content_block_stop", {"type": "content_block_stop", "index": 0})
        self._event("message_delta", {"type": "message_delta", "usage": usage,
                                      "delta": {"stop_reason": stop, "stop_sequence": None}})
        self._event("message_stop", {"type": "message_stop"})

    # --- OpenAI Responses -----------------------------------------------------------------

    def _openai(self, path: str, body: dict[str, Any]) -> None:
        answer, _ = self._answer("openai", path, body)
        if isinstance(answer, Error):
            kind = "server_error" if answer.status >= 500 else "invalid_request_error"
            self._json(answer.status, {"error": {
                "message": answer.message, "type": kind, "code": None, "param": None}})
            return
        sequence = itertools.count()

        def send(name: str, **payload: Any) -> None:
            self._event(name, {"type": name, "sequence_number": next(sequence), **payload})

        response = {"id": self.api.new_id("resp_fake"), "object": "response",
                    "created_at": int(time.time()), "model": body.get("model", "gpt-fake"),
                    "output": []}
        item_id = self.api.new_id("item_fake")
        self._start_sse()
        send("response.created", response={**response, "status": "in_progress"})
        if isinstance(answer, ToolCall | ToolUse | ToolSearch):
            item = (self._openai_call(item_id, _tool_names("openai", body), answer.command)
                    if isinstance(answer, ToolCall) else self._openai_use(item_id, body, answer))
            send("response.output_item.added", output_index=0,
                 item={**item, "status": "in_progress"})
        else:
            at = {"item_id": item_id, "output_index": 0, "content_index": 0}
            part = {"type": "output_text", "text": answer.text, "annotations": []}
            item = {"id": item_id, "type": "message", "role": "assistant", "status": "completed",
                    "content": [part]}
            send("response.output_item.added", output_index=0,
                 item={**item, "status": "in_progress", "content": []})
            send("response.content_part.added", **at, part={**part, "text": ""})
            for word in _words(answer.text):
                _pause(answer)
                send("response.output_text.delta", **at, delta=word)
            send("response.output_text.done", **at, text=answer.text)
            send("response.content_part.done", **at, part=part)
        send("response.output_item.done", output_index=0, item=item)
        usage = answer.usage
        send("response.completed", response={**response, "status": "completed", "output": [item],
                                              "usage": {
            "input_tokens": usage.input,
            "input_tokens_details": {"cached_tokens": usage.cache_read,
                                     "cache_write_tokens": usage.cache_write},
            "output_tokens": usage.output,
            "output_tokens_details": {"reasoning_tokens": usage.reasoning},
            "total_tokens": usage.input + usage.output}})

    def _openai_call(self, item_id: str, tools: list[str], command: str) -> dict[str, Any]:
        call_id = self.api.new_id("call_fake")
        name = next((tool for tool in CODEX_SHELLS if tool in tools), CODEX_SHELLS[0])
        if name == "local_shell":
            return {"id": item_id, "type": "local_shell_call", "call_id": call_id,
                    "status": "completed",
                    "action": {"type": "exec", "command": ["bash", "-lc", command]}}
        arguments: dict[str, Any] = {
            "exec_command": {"cmd": command},
            "shell_command": {"command": command},
        }.get(name, {"command": ["bash", "-lc", command]})
        return {"id": item_id, "type": "function_call", "status": "completed", "name": name,
                "call_id": call_id, "arguments": json.dumps(arguments)}

    def _openai_use(self, item_id: str, body: dict[str, Any],
                    answer: ToolUse | ToolSearch) -> dict[str, Any]:
        call_id = self.api.new_id("call_fake")
        if isinstance(answer, ToolSearch):
            return {"id": item_id, "type": "tool_search_call", "call_id": call_id,
                    "status": "completed", "execution": "client",
                    "arguments": {"query": answer.query}}
        namespace, name = _openai_function(body, answer.name)
        return {"id": item_id, "type": "function_call", "status": "completed", "name": name,
                **({"namespace": namespace} if namespace else {}), "call_id": call_id,
                "arguments": json.dumps(answer.arguments)}

    # --- Gemini ---------------------------------------------------------------------------

    def _gemini_count(self, path: str, body: dict[str, Any]) -> None:
        self.api.take(Request("gemini", path, body), turn=False)
        self._json(200, {"totalTokens": 1})

    def _gemini(self, path: str, body: dict[str, Any]) -> None:
        answer, turn = self._answer("gemini", path, body)
        if isinstance(answer, Error):
            statuses = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                        404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE"}
            self._json(answer.status, {"error": {"code": answer.status, "message": answer.message,
                                                 "status": statuses.get(answer.status, "INTERNAL")}})
            return
        usage = answer.usage
        metadata = {"promptTokenCount": usage.input, "candidatesTokenCount": usage.output,
                    "cachedContentTokenCount": usage.cache_read,
                    "thoughtsTokenCount": usage.reasoning,
                    "totalTokenCount": usage.input + usage.output + usage.reasoning}
        if isinstance(answer, ToolCall):
            parts: list[dict[str, Any]] = [{"functionCall": {
                "name": GEMINI_SHELL, "args": {"command": answer.command}}}]
        elif isinstance(answer, ToolUse):
            parts = [{"functionCall": {"name": _offered("gemini", body, answer.name),
                                       "args": answer.arguments}}]
        elif not turn and _wants_json(body):
            parts = [{"text": json.dumps(_side_json(body))}]
        else:
            parts = [{"text": word} for word in _words(_text_of(answer))]
        model = path.rsplit("/", 1)[-1].split(":", 1)[0]

        def chunk(parts: list[dict[str, Any]], last: bool) -> dict[str, Any]:
            candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
            if last:
                candidate["finishReason"] = "STOP"
            return {"candidates": [candidate], "modelVersion": model,
                    **({"usageMetadata": metadata} if last else {})}

        if path.endswith(":generateContent"):
            if all("text" in part for part in parts):
                parts = [{"text": "".join(part["text"] for part in parts)}]
            self._json(200, chunk(parts, last=True))
            return
        self._start_sse()
        for index, part in enumerate(parts):
            _pause(answer)
            self._event(None, chunk([part], last=index == len(parts) - 1))


def _text_of(answer: Reply | Slow | ToolSearch) -> str:
    """What the model says: a search only codex runs is said as its query elsewhere."""
    return answer.query if isinstance(answer, ToolSearch) else answer.text


def _pause(answer: Answer) -> None:
    if isinstance(answer, Slow):
        time.sleep(answer.seconds_per_chunk)


def _wants_json(body: dict[str, Any]) -> bool:
    return (body.get("generationConfig") or {}).get("responseMimeType") == "application/json"


def _side_json(body: dict[str, Any]) -> Any:
    config = body.get("generationConfig") or {}
    return _sample(config.get("responseJsonSchema") or config.get("responseSchema") or {})


def _sample(schema: dict[str, Any]) -> Any:
    """A small value of `schema`: the first of an enum, else empty or zero, every property set
    (gemini's router then picks its first model choice; its next-speaker check, the first)."""
    kind = str(schema.get("type", "object")).lower()
    if schema.get("enum"):
        return schema["enum"][0]
    if kind == "object":
        return {name: _sample(sub) for name, sub in (schema.get("properties") or {}).items()}
    return {"array": [], "integer": 0, "number": 0, "boolean": False}.get(kind, "")
