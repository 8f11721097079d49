"""Who may talk to `aq web`: an ASGI middleware in front of every route.

- Host: the Host header must name the address served (or, on loopback, localhost), so a page
  of another site cannot reach a loopback server through a name it controls (DNS rebinding).
- Token: off loopback every request must carry the token, as `Authorization: Bearer T`, the
  `aq_token` cookie, or `?token=T` once (answered with the cookie and a redirect without it).
- CSRF: every request that changes something (not GET or HEAD) must carry this server's CSRF
  value in the `X-AQ-CSRF` header, which only aq's own pages know, and an Origin, if sent, of
  this server.
A refusal is one plain line and changes nothing.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

TOKEN_COOKIE = "aq_token"
CSRF_HEADER = "x-aq-csrf"
SAFE_METHODS = frozenset({"GET", "HEAD"})


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Access:
    host: str  # the address served
    port: int
    token: str | None  # None: loopback without a token
    csrf: str

    def hosts(self) -> frozenset[str]:
        """The Host header values this server answers to; empty: any (bound to all addresses)."""
        if self.host in ("0.0.0.0", "::", ""):
            return frozenset()
        names = {self.host, f"[{self.host}]"} if ":" in self.host else {self.host}
        if is_loopback(self.host):
            names |= {"localhost", "127.0.0.1", "[::1]"}
        return frozenset({*names, *(f"{name}:{self.port}" for name in names)})


class Guard:
    def __init__(self, app: ASGIApp, access: Access) -> None:
        self.app, self.access, self.hosts = app, access, access.hosts()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {name.decode("latin-1").lower(): value.decode("latin-1")
                   for name, value in scope["headers"]}
        host = headers.get("host", "")
        if self.hosts and host not in self.hosts:
            await _refuse(send, 403, f"aq web: this server does not answer to host {host!r}")
            return
        if self.access.token is not None:
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            if _same(query.get("token"), self.access.token):
                await _with_cookie(send, scope, query, self.access.token)
                return
            if not self._has_token(headers):
                await _refuse(send, 401, "aq web: a token is needed: open the address aq web "
                              "printed, with its ?token=")
                return
        if scope["method"] not in SAFE_METHODS:
            problem = self._csrf_problem(headers, host)
            if problem:
                await _refuse(send, 403, f"aq web: {problem}")
                return
        await self.app(scope, receive, send)

    def _has_token(self, headers: dict[str, str]) -> bool:
        token = self.access.token
        bearer = headers.get("authorization", "")
        if bearer.startswith("Bearer ") and _same(bearer[7:].strip(), token):
            return True
        cookie: SimpleCookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed cookie header is no token
            return False
        morsel = cookie.get(TOKEN_COOKIE)
        return morsel is not None and _same(morsel.value, token)

    def _csrf_problem(self, headers: dict[str, str], host: str) -> str | None:
        if not _same(headers.get(CSRF_HEADER), self.access.csrf):
            return "a change needs the CSRF value of this server's own pages: reload the page"
        origin = headers.get("origin")
        if origin and origin != "null" and origin.split("://", 1)[-1] != host:
            return f"a change from another site ({origin}) is refused"
        return None


def _same(given: str | None, expected: str | None) -> bool:
    return given is not None and expected is not None and hmac.compare_digest(
        given.encode(), expected.encode())


async def _refuse(send: Send, status: int, line: str) -> None:
    body = (line + "\n").encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _with_cookie(send: Send, scope: Scope, query: dict[str, str], token: str) -> None:
    """The token came in the address: keep it in a cookie and send the browser on without it."""
    rest = urlencode({k: v for k, v in query.items() if k != "token"})
    # the decoded path, encoded again: a CR or LF must not reach the header, nor a backslash
    # ('/\\host' is '//host' to a browser) or other text a browser may read its own way
    path = quote(str(scope.get("path") or "/"), safe="/-._~!$&'()*+,;=:@")
    if not path.startswith("/") or path.startswith("//"):  # '//host' would leave this site
        path = "/"
    location = path + (f"?{rest}" if rest else "")
    cookie = f"{TOKEN_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"
    await send({"type": "http.response.start", "status": 303,
                "headers": [(b"location", location.encode()), (b"set-cookie", cookie.encode()),
                            (b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})
