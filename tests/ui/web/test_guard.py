"""aq web's guard (aq/ui/web/guard.py), called as the ASGI app it is: who gets through, and
that a refused request never reaches a route (so it changes nothing)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from aq.ui.web.guard import Access, Guard, is_loopback

CSRF = "csrf-value-for-tests-0123456789"
TOKEN = "token-value-for-tests-0123456789"


class Route:
    """The app behind the guard: counts the requests that reached it."""

    def __init__(self) -> None:
        self.reached: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.reached.append(f"{scope['method']} {scope['path']}")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def call(guard: Guard, method: str = "GET", path: str = "/", query: str = "",
         **headers: str) -> tuple[int, dict[str, str], str]:
    """One request through the guard: status, headers, body."""
    sent: list[dict[str, Any]] = []
    scope = {"type": "http", "method": method, "path": path, "query_string": query.encode(),
             "headers": [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(guard(scope, receive, send))
    start = sent[0]
    answer = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], answer, b"".join(m.get("body", b"") for m in sent[1:]).decode()


def guarded(host: str = "127.0.0.1", token: str | None = None) -> tuple[Guard, Route]:
    route = Route()
    return Guard(route, Access(host=host, port=8765, token=token, csrf=CSRF)), route


def test_loopback_without_a_token_serves_pages_to_its_own_host_names() -> None:
    guard, route = guarded()
    for host in ("127.0.0.1:8765", "localhost:8765", "[::1]:8765"):
        assert call(guard, host=host)[0] == 200
    assert len(route.reached) == 3


@pytest.mark.parametrize("host", ["evil.example:8765", "127.0.0.1:9999", ""])
def test_a_host_header_it_does_not_serve_is_refused(host: str) -> None:
    """A page of another site reaching a loopback server through a name it controls (DNS
    rebinding) carries that name: refused, one line, never routed."""
    guard, route = guarded()
    status, _, body = call(guard, host=host)
    assert status == 403 and body.count("\n") == 1 and "does not answer to host" in body
    assert route.reached == []


def test_a_change_without_the_csrf_value_is_refused_and_never_routed() -> None:
    guard, route = guarded()
    for headers in ({}, {"x_aq_csrf": "wrong"}, {"x_aq_csrf": ""}):
        status, _, body = call(guard, "POST", "/jobs/a/ship", host="127.0.0.1:8765", **headers)
        assert status == 403 and "CSRF" in body
    assert route.reached == []
    assert call(guard, "POST", "/jobs/a/ship", host="127.0.0.1:8765", x_aq_csrf=CSRF)[0] == 200
    assert route.reached == ["POST /jobs/a/ship"]


def test_a_change_from_another_origin_is_refused_even_with_the_csrf_value() -> None:
    guard, route = guarded()
    status, _, body = call(guard, "POST", "/fleet/halt", host="127.0.0.1:8765", x_aq_csrf=CSRF,
                           origin="http://evil.example")
    assert status == 403 and "another site" in body and route.reached == []
    assert call(guard, "POST", "/fleet/halt", host="127.0.0.1:8765", x_aq_csrf=CSRF,
                origin="http://127.0.0.1:8765")[0] == 200


def test_off_loopback_every_request_needs_the_token() -> None:
    guard, route = guarded("0.0.0.0", TOKEN)
    for headers in ({}, {"authorization": "Bearer nope"}, {"cookie": "aq_token=nope"},
                    {"cookie": "garbage;;=="}):
        status, _, body = call(guard, host="10.1.2.3:8765", **headers)
        assert status == 401 and "token" in body
    status, _, _ = call(guard, "POST", "/jobs/a/ship", host="10.1.2.3:8765", x_aq_csrf=CSRF)
    assert status == 401
    assert route.reached == []
    assert call(guard, host="10.1.2.3:8765", authorization=f"Bearer {TOKEN}")[0] == 200
    assert call(guard, host="10.1.2.3:8765", cookie=f"aq_token={TOKEN}")[0] == 200
    assert len(route.reached) == 2


def test_the_token_in_the_address_becomes_a_cookie_and_leaves_the_address() -> None:
    guard, route = guarded("0.0.0.0", TOKEN)
    status, headers, _ = call(guard, path="/jobs/a", query=f"token={TOKEN}&attempt=2",
                              host="10.1.2.3:8765")
    assert status == 303 and headers["location"] == "/jobs/a?attempt=2"
    assert headers["set-cookie"].startswith(f"aq_token={TOKEN};")
    assert "HttpOnly" in headers["set-cookie"] and "SameSite=Strict" in headers["set-cookie"]
    assert route.reached == []


def test_with_the_token_a_change_still_needs_the_csrf_value() -> None:
    guard, route = guarded("0.0.0.0", TOKEN)
    status, _, _ = call(guard, "POST", "/fleet/resume", host="10.1.2.3:8765",
                        authorization=f"Bearer {TOKEN}")
    assert status == 403 and route.reached == []


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("::1", True),
                                                ("localhost", True), ("0.0.0.0", False),
                                                ("192.168.1.4", False), ("example.com", False)])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_the_token_redirect_never_leaves_this_site() -> None:
    guard, _ = guarded("0.0.0.0", TOKEN)
    status, headers, _ = call(guard, path="//evil.example/x", query=f"token={TOKEN}",
                              host="10.1.2.3:8765")
    assert status == 303 and headers["location"] == "/"


@pytest.mark.parametrize(("path", "location"), [
    ("/\\evil.example", "/%5Cevil.example"),  # '/\host' is '//host' to a browser
    ("/\r\nSet-Cookie: x=1", "/%0D%0ASet-Cookie:%20x=1"),  # was a server traceback
    ("/jobs/caf\u00e9", "/jobs/caf%C3%A9")])
def test_the_token_redirect_sends_the_path_encoded(path: str, location: str) -> None:
    """The decoded path went back into Location as it was: a backslash path left the site, a
    CR LF made the server fail with a traceback, and non-ASCII went out unencoded."""
    guard, _ = guarded("0.0.0.0", TOKEN)
    status, headers, _ = call(guard, path=path, query=f"token={TOKEN}", host="10.1.2.3:8765")
    assert status == 303 and headers["location"] == location
