"""A local stand-in for the GitHub REST API (v3), for testing aq's GitHub tracker adapter.

The live API is out of reach from the test machines, so this server answers the few issue
endpoints the adapter uses with the shapes GitHub documents: status codes, JSON bodies, error
bodies, rate-limit headers and `Link` pagination. Faults (error statuses, rate limits, dropped
connections) are queued by the test and served to the next matching requests.

Deliberate GitHub behaviours worth knowing when writing an adapter against it:
- an issue's empty body is `null`, as on GitHub; labels come back sorted by name;
- `/search/issues` answers 422 unless the query says `is:issue` or `is:pr` (GitHub has required
  this since 2025), and 422 for a qualifier the fake does not implement, rather than guessing;
- the rate-limit budget is reported in headers but never enforced: exhaustion is simulated
  only through `rate_limit_next`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, TypeVar, cast
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

T = TypeVar("T")

DEFAULT_TOKEN = "ghp_fake0123456789abcdefABCDEF0123456789"
SEED_LOGIN = "octocat"  # author of issues and comments seeded by the test
API_LOGIN = "aq-bot"  # the token's user: author of comments posted through the API
DOCS = "https://docs.github.com/rest"
RATE_DOCS = f"{DOCS}/overview/rate-limits-for-the-rest-api"
SECONDARY_DOCS = f"{RATE_DOCS}#about-secondary-rate-limits"
ISSUES_DOCS = f"{DOCS}/issues/issues"
COMMENTS_DOCS = f"{DOCS}/issues/comments"
LABELS_DOCS = f"{DOCS}/issues/labels"
SEARCH_DOCS = f"{DOCS}/search/search#search-issues-and-pull-requests"
DEFAULT_PER_PAGE = 30
SEARCH_RESULT_CAP = 1000  # GitHub serves at most the first 1000 search results
# (resource, authenticated) -> (requests per window, window seconds), as documented.
LIMITS = {
    ("core", True): (5000, 3600), ("core", False): (60, 3600),
    ("search", True): (30, 60), ("search", False): (10, 60),
}
STATE_REASONS = ("completed", "not_planned", "reopened", None)
SEARCH_GATE = "Query must include 'is:issue' or 'is:pull-request'"
UNSEARCHABLE = ("The listed users and repositories cannot be searched either because the "
                "resources do not exist or you do not have permission to view them.")


@dataclass(frozen=True)
class Request:
    """One request as the server received it. `path` keeps the client's percent-encoding;
    `query` is decoded (the last value wins for a repeated name); header names are lower-case;
    `body` is the parsed JSON, the raw text when it was not JSON, or None when empty."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: object | None


@dataclass
class _Label:
    id: int
    name: str
    color: str = "ededed"
    description: str | None = None


@dataclass
class _Comment:
    id: int
    body: str
    login: str
    created: float


@dataclass
class _Issue:
    id: int
    number: int
    title: str
    body: str
    labels: list[_Label]
    pull_request: bool
    created: float
    updated: float
    touched: int  # orders updates that fall in the same second
    state: str = "open"
    state_reason: str | None = None
    closed: float | None = None
    comments: list[_Comment] = field(default_factory=list)


@dataclass
class _Repo:
    name: str  # "owner/name" as first given
    issues: dict[int, _Issue] = field(default_factory=dict)
    labels: dict[str, _Label] = field(default_factory=dict)  # by lower-cased name
    pulls: dict[int, dict[str, str]] = field(default_factory=dict)  # number -> head, base, ...


@dataclass
class _Fault:
    status: int
    times: int
    method: str | None = None
    path: re.Pattern[str] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    message: str | None = None
    rate_limit: str | None = None  # "primary" / "secondary"
    reset_in: float = 0.0

    def matches(self, method: str, path: str) -> bool:
        return ((self.method is None or self.method == method)
                and (self.path is None or self.path.search(path) is not None))


@dataclass
class _Window:
    limit: int
    length: int
    used: int = 0
    reset: int = 0

    def current(self, now: float) -> _Window:
        if now >= self.reset:
            self.used, self.reset = 0, math.ceil(now) + self.length
        return self

    def shape(self) -> dict[str, int]:
        return {"limit": self.limit, "used": self.used,
                "remaining": max(self.limit - self.used, 0), "reset": self.reset}


@dataclass
class _Reply:
    status: int
    body: object
    headers: dict[str, str] = field(default_factory=dict)


class _ApiError(Exception):
    """A GitHub-style error answer: {"message", "documentation_url", "status"} (+ "errors")."""

    def __init__(self, status: int, message: str, doc: str = DOCS,
                 errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.doc, self.errors = status, message, doc, errors

    def reply(self) -> _Reply:
        body: dict[str, Any] = {"message": self.message, "documentation_url": self.doc}
        if self.errors is not None:
            body["errors"] = self.errors
        body["status"] = str(self.status)
        return _Reply(self.status, body)


def _not_found(doc: str = DOCS) -> _ApiError:
    return _ApiError(404, "Not Found", doc)


def _invalid(field_name: str, value: object, expected: str, doc: str) -> _ApiError:
    return _ApiError(422, f"Invalid request.\n\nFor 'properties/{field_name}', "
                          f"{json.dumps(value)} is not {expected}.", doc)


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


def _user(login: str) -> dict[str, Any]:
    uid = sum(login.encode()) * 7919
    return {"login": login, "id": uid, "node_id": f"U_kgDO{uid:08X}", "type": "User",
            "site_admin": False, "url": f"https://api.github.com/users/{login}",
            "html_url": f"https://github.com/{login}"}


class FakeGitHub:
    """An in-process GitHub REST API on 127.0.0.1, started with `start()` or `with`.

    Seed it with `add_issue`, point the adapter at `url`, then read back what the adapter did
    with `comments`, `labels`, `state`, `state_reason` and `requests`.
    """

    def __init__(self, token: str | None = DEFAULT_TOKEN, *, private: bool = False,
                 clock: Callable[[], float] = time.time) -> None:
        self.token = token  # None: any token is accepted
        self.private = private
        self.clock = clock  # wall clock for timestamps and rate-limit resets
        self.url = ""
        self.per_page_max = 100
        self.requests: list[Request] = []
        self._lock = threading.RLock()
        self._repos: dict[str, _Repo] = {}
        self._faults: list[_Fault] = []
        self._windows = {key: _Window(limit, length) for key, (limit, length) in LIMITS.items()}
        self._ids = itertools.count(1_000_001)
        self._touches = itertools.count(1)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeGitHub:
        if self._server is None:
            self._server = _Server(self)
            self.url = f"http://127.0.0.1:{self._server.server_port}"
            self._thread = threading.Thread(target=self._server.serve_forever, args=(0.01,),
                                            name="fake-github", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        server, thread, self._server, self._thread = self._server, self._thread, None, None
        if server is None:
            return
        server.shutdown()
        server.drop_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> FakeGitHub:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- seeding and inspection, for the test ------------------------------------------------

    def add_repo(self, repo: str) -> None:
        """Make `repo` ("owner/name") exist with no issues (add_issue makes it too)."""
        with self._lock:
            self._repos.setdefault(repo.lower(), _Repo(repo))

    def add_issue(self, repo: str, title: str, body: str = "", labels: Iterable[str] = (),
                  state: str = "open", pull_request: bool = False) -> int:
        with self._lock:
            self.add_repo(repo)
            r = self._repos[repo.lower()]
            now = self.clock()
            number = len(r.issues) + 1
            issue = _Issue(next(self._ids), number, title, body, [], pull_request,
                           created=now, updated=now, touched=next(self._touches))
            self._set_labels(r, issue, labels)
            self._set_state(issue, state, ..., now)
            r.issues[number] = issue
            return number

    def pulls(self, repo: str) -> list[dict[str, str]]:
        """The pull requests opened through the API: number, head, base, title, body, state."""
        with self._lock:
            return [{"number": str(n), **pull} for n, pull in self._repo(repo).pulls.items()]

    def add_comment(self, repo: str, number: int, body: str, login: str = SEED_LOGIN) -> int:
        """Seed a comment (as `login`); returns its id."""
        with self._lock:
            issue = self._issue(repo, number)
            comment = _Comment(next(self._ids), body, login, self.clock())
            issue.comments.append(comment)
            self._touch(issue, comment.created)
            return comment.id

    def set_issue(self, repo: str, number: int, **changes: Any) -> None:
        """Change an issue behind the adapter's back: title=, body=, labels=, state=,
        state_reason=."""
        unknown = set(changes) - {"title", "body", "labels", "state", "state_reason"}
        if unknown:
            raise TypeError(f"set_issue() cannot change {sorted(unknown)}")
        with self._lock:
            r, issue = self._repo(repo), self._issue(repo, number)
            now = self.clock()
            issue.title = changes.get("title", issue.title)
            issue.body = changes.get("body", issue.body)
            if "labels" in changes:
                self._set_labels(r, issue, changes["labels"])
            if "state" in changes or "state_reason" in changes:
                self._set_state(issue, changes.get("state", issue.state),
                                changes.get("state_reason", ...), now)
            self._touch(issue, now)

    def comments(self, repo: str, number: int) -> list[str]:
        with self._lock:
            return [c.body for c in self._issue(repo, number).comments]

    def labels(self, repo: str, number: int) -> list[str]:
        with self._lock:
            return [label.name for label in self._issue(repo, number).labels]

    def state(self, repo: str, number: int) -> str:
        with self._lock:
            return self._issue(repo, number).state

    def state_reason(self, repo: str, number: int) -> str | None:
        with self._lock:
            return self._issue(repo, number).state_reason

    # -- faults ------------------------------------------------------------------------------

    def fail_next(self, status: int, *, times: int = 1, method: str | None = None,
                  path: str | None = None, headers: dict[str, str] | None = None,
                  message: str | None = None) -> None:
        """Answer the next `times` requests matching `method` and `path` (a regex searched in
        the URL path) with `status` and a GitHub error body; status 0 drops the connection."""
        with self._lock:
            self._faults.append(_Fault(status, times, method,
                                       re.compile(path) if path is not None else None,
                                       dict(headers or {}), message))

    def rate_limit_next(self, *, times: int = 1, reset_in: float = 1.0,
                        secondary: bool = False) -> None:
        """Answer the next `times` requests with GitHub's primary (x-ratelimit-remaining: 0)
        or secondary (retry-after) rate-limit 403."""
        with self._lock:
            self._faults.append(_Fault(403, times, rate_limit="secondary" if secondary
                                       else "primary", reset_in=reset_in))

    # -- serving -----------------------------------------------------------------------------

    def _serve(self, req: Request, pairs: list[tuple[str, str]], json_ok: bool, client: str,
               ) -> _Reply | None:
        """The whole answer to one request; None means drop the connection unanswered."""
        with self._lock:
            self.requests.append(req)
            now = self.clock()
            authed = "authorization" in req.headers
            resource = "search" if req.path.startswith("/search/") else "core"
            window = self._windows[(resource, authed)].current(now)
            if req.path != "/rate_limit":  # as documented, checking the limit is free
                window.used += 1
            headers = {"x-ratelimit-limit": str(window.limit),
                       "x-ratelimit-remaining": str(max(window.limit - window.used, 0)),
                       "x-ratelimit-reset": str(window.reset),
                       "x-ratelimit-used": str(window.used),
                       "x-ratelimit-resource": resource,
                       "x-github-request-id": _request_id(),
                       "x-github-media-type": "github.v3; format=json",
                       "x-github-api-version-selected": "2022-11-28"}
            fault = self._take_fault(req)
            if fault is not None and fault.status == 0:
                return None
            try:
                if fault is not None:
                    raise self._fault_error(fault, headers, authed, client, now)
                reply = self._route(req, pairs, json_ok, now)
            except _ApiError as e:
                reply = e.reply()
                if fault is not None:
                    headers.update(fault.headers)
            except Exception as e:  # a bug here should read as one in the test, not a hang
                reply = _ApiError(500, f"fake_github failed: {e!r}").reply()
            reply.headers = {**headers, **reply.headers}
            return reply

    def _take_fault(self, req: Request) -> _Fault | None:
        for fault in self._faults:
            if fault.matches(req.method, req.path):
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _fault_error(self, fault: _Fault, headers: dict[str, str], authed: bool, client: str,
                     now: float) -> _ApiError:
        if fault.rate_limit == "primary":
            limit = headers["x-ratelimit-limit"]
            headers.update({"x-ratelimit-remaining": "0", "x-ratelimit-used": limit,
                            "x-ratelimit-reset": str(math.ceil(now + fault.reset_in))})
            who = (f"user ID {_user(API_LOGIN)['id']}." if authed else
                   f"{client}. (But here's the good news: Authenticated requests get a higher "
                   "rate limit. Check out the documentation for more details.)")
            return _ApiError(403, f"API rate limit exceeded for {who}", RATE_DOCS)
        if fault.rate_limit == "secondary":
            headers["retry-after"] = str(math.ceil(fault.reset_in))
            return _ApiError(403, "You have exceeded a secondary rate limit. Please wait a few "
                                  "minutes before you try again. If you reach out to GitHub "
                                  "Support for help, please include the request ID "
                                  f"{headers['x-github-request-id']}.", SECONDARY_DOCS)
        try:
            phrase = HTTPStatus(fault.status).phrase
        except ValueError:
            phrase = "Error"
        return _ApiError(fault.status, fault.message or phrase)

    def _route(self, req: Request, pairs: list[tuple[str, str]], json_ok: bool, now: float,
               ) -> _Reply:
        authed = self._authenticate(req)
        for method, pattern, handler in _ROUTES:
            match = pattern.fullmatch(req.path)
            if match is None or method != req.method:
                continue
            if req.method != "GET" and not authed:
                raise _ApiError(401, "Requires authentication", DOCS)
            params = {k: unquote(v) for k, v in match.groupdict().items()}
            return handler(self, _Call(req, pairs, params, authed, now, json_ok))
        raise _not_found()

    def _authenticate(self, req: Request) -> bool:
        """True for a good token, False for none; a bad token is an error, reads included."""
        header = req.headers.get("authorization")
        if header is None:
            return False
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() not in ("bearer", "token") or not token.strip() or (
                self.token is not None and token.strip() != self.token):
            raise _ApiError(401, "Bad credentials", DOCS)
        return True

    # -- the model ---------------------------------------------------------------------------

    def _repo(self, repo: str) -> _Repo:
        try:
            return self._repos[repo.lower()]
        except KeyError:
            raise KeyError(f"no repository {repo!r}: seed it with add_issue or add_repo") from None

    def _issue(self, repo: str, number: int) -> _Issue:
        try:
            return self._repo(repo).issues[number]
        except KeyError:
            raise KeyError(f"no issue {repo}#{number}") from None

    def _visible(self, call: _Call, doc: str) -> _Repo:
        """The repository a /repos/ call names, or GitHub's 404 when it is unknown or private
        to an unauthenticated caller."""
        r = self._repos.get(f"{call.params['owner']}/{call.params['name']}".lower())
        if r is None or (self.private and not call.authed):
            raise _not_found(doc)
        return r

    def _visible_issue(self, call: _Call, doc: str) -> tuple[_Repo, _Issue]:
        r = self._visible(call, doc)
        issue = r.issues.get(int(call.params["number"]))
        if issue is None:
            raise _not_found(doc)
        return r, issue

    def _label(self, r: _Repo, name: str) -> _Label:
        label = r.labels.get(name.lower())
        if label is None:
            label = r.labels[name.lower()] = _Label(next(self._ids), name)
        return label

    def _set_labels(self, r: _Repo, issue: _Issue, names: Iterable[str]) -> None:
        chosen = {label.name.lower(): label for label in (self._label(r, n) for n in names)}
        issue.labels = sorted(chosen.values(), key=lambda label: label.name.lower())

    def _set_state(self, issue: _Issue, state: str, reason: object, now: float) -> None:
        """GitHub's rules: closing defaults the reason to "completed", reopening sets
        "reopened"; `reason` is ... when not given."""
        if state not in ("open", "closed"):
            raise ValueError(f"state must be 'open' or 'closed', not {state!r}")
        if state != issue.state:
            issue.state = state
            issue.closed = now if state == "closed" else None
            issue.state_reason = "completed" if state == "closed" else "reopened"
        if reason is not ... and (state == "closed" or reason in ("reopened", None)):
            issue.state_reason = cast("str | None", reason)

    def _touch(self, issue: _Issue, now: float) -> None:
        issue.updated, issue.touched = now, next(self._touches)

    # -- JSON shapes -------------------------------------------------------------------------

    def _label_json(self, r: _Repo, label: _Label) -> dict[str, Any]:
        return {"id": label.id, "node_id": f"LA_kwDO{label.id:08X}",
                "url": f"{self.url}/repos/{r.name}/labels/{quote(label.name, safe='')}",
                "name": label.name, "color": label.color, "default": False,
                "description": label.description}

    def _issue_json(self, r: _Repo, issue: _Issue) -> dict[str, Any]:
        api, n = f"{self.url}/repos/{r.name}", issue.number
        html = f"https://github.com/{r.name}/{'pull' if issue.pull_request else 'issues'}/{n}"
        shape: dict[str, Any] = {
            "url": f"{api}/issues/{n}", "repository_url": api,
            "labels_url": f"{api}/issues/{n}/labels{{/name}}",
            "comments_url": f"{api}/issues/{n}/comments", "events_url": f"{api}/issues/{n}/events",
            "timeline_url": f"{api}/issues/{n}/timeline", "html_url": html,
            "id": issue.id, "node_id": f"I_kwDO{issue.id:08X}", "number": n,
            "title": issue.title, "user": _user(SEED_LOGIN),
            "labels": [self._label_json(r, label) for label in issue.labels],
            "state": issue.state, "locked": False, "assignee": None, "assignees": [],
            "milestone": None, "comments": len(issue.comments),
            "created_at": _iso(issue.created), "updated_at": _iso(issue.updated),
            "closed_at": _iso(issue.closed), "author_association": "OWNER",
            "active_lock_reason": None, "body": issue.body or None,
            "state_reason": issue.state_reason, "performed_via_github_app": None,
        }
        if issue.pull_request:
            shape["draft"] = False
            shape["pull_request"] = {"url": f"{api}/pulls/{n}", "html_url": html,
                                     "diff_url": f"{html}.diff", "patch_url": f"{html}.patch",
                                     "merged_at": None}
        return shape

    def _comment_json(self, r: _Repo, issue: _Issue, comment: _Comment) -> dict[str, Any]:
        api = f"{self.url}/repos/{r.name}"
        html = f"https://github.com/{r.name}/{'pull' if issue.pull_request else 'issues'}"
        html = f"{html}/{issue.number}"
        return {"url": f"{api}/issues/comments/{comment.id}",
                "html_url": f"{html}#issuecomment-{comment.id}",
                "issue_url": f"{api}/issues/{issue.number}", "id": comment.id,
                "node_id": f"IC_kwDO{comment.id:08X}", "user": _user(comment.login),
                "created_at": _iso(comment.created), "updated_at": _iso(comment.created),
                "author_association": "OWNER", "body": comment.body,
                "performed_via_github_app": None}

    def _paginate(self, call: _Call, items: Sequence[T], cap: int | None = None,
                  ) -> tuple[list[T], dict[str, str]]:
        """One page of `items` and its `Link` header, as GitHub builds them."""
        per_page = _int(call.req.query.get("per_page"), DEFAULT_PER_PAGE)
        per_page = min(per_page if per_page >= 1 else DEFAULT_PER_PAGE, self.per_page_max)
        page = max(_int(call.req.query.get("page"), 1), 1)
        reachable = len(items) if cap is None else min(len(items), cap)
        last = max(math.ceil(reachable / per_page), 1)
        chunk = list(items[(page - 1) * per_page:min(page * per_page, reachable)])
        rels = [("prev", page - 1)] if page > 1 else []
        rels += [("next", page + 1), ("last", last)] if page < last else []
        rels += [("first", 1)] if page > 1 else []
        if not rels:
            return chunk, {}
        links = [f'<{self._page_url(call, n)}>; rel="{rel}"' for rel, n in rels]
        return chunk, {"link": ", ".join(links)}

    def _page_url(self, call: _Call, page: int) -> str:
        pairs = [(k, v) for k, v in call.pairs if k != "page"] + [("page", str(page))]
        return f"{self.url}{call.req.path}?{urlencode(pairs)}"


@dataclass
class _Call:
    req: Request
    pairs: list[tuple[str, str]]  # the query as sent, in order, for Link URLs
    params: dict[str, str]  # from the route's pattern, percent-decoded
    authed: bool
    now: float
    json_ok: bool  # False when the body was not JSON

    def json_object(self, doc: str) -> dict[str, Any]:
        if not self.json_ok:
            raise _ApiError(400, "Problems parsing JSON", doc)
        if self.req.body is None:
            return {}
        if not isinstance(self.req.body, dict):
            raise _ApiError(422, "Invalid request.\n\nInvalid input: object expected.", doc)
        return self.req.body


# -- endpoints ---------------------------------------------------------------------------------


def _get_issue(gh: FakeGitHub, call: _Call) -> _Reply:
    r, issue = gh._visible_issue(call, f"{ISSUES_DOCS}#get-an-issue")
    return _Reply(200, gh._issue_json(r, issue))


def _update_issue(gh: FakeGitHub, call: _Call) -> _Reply:
    doc = f"{ISSUES_DOCS}#update-an-issue"
    r, issue = gh._visible_issue(call, doc)
    data = call.json_object(doc)
    for key in ("title", "body"):
        if key in data and not (isinstance(data[key], str) or (key == "body" and data[key] is None)):
            raise _invalid(key, data[key], "a string", doc)
    if "state" in data and data["state"] not in ("open", "closed"):
        raise _invalid("state", data["state"], 'one of ["open", "closed"]', doc)
    if "state_reason" in data and data["state_reason"] not in STATE_REASONS:
        raise _invalid("state_reason", data["state_reason"],
                       'one of ["completed", "not_planned", "reopened", null]', doc)
    names = _label_names(data["labels"], doc) if "labels" in data else None
    issue.title = data.get("title", issue.title)
    issue.body = data.get("body", issue.body) or ""
    if names is not None:
        gh._set_labels(r, issue, names)
    if "state" in data or "state_reason" in data:
        gh._set_state(issue, data.get("state", issue.state), data.get("state_reason", ...),
                      call.now)
    gh._touch(issue, call.now)
    return _Reply(200, gh._issue_json(r, issue))


def _list_issues(gh: FakeGitHub, call: _Call) -> _Reply:
    doc = f"{ISSUES_DOCS}#list-repository-issues"
    r = gh._visible(call, doc)
    q = call.req.query
    state = q.get("state", "open")
    if state not in ("open", "closed", "all"):
        raise _ApiError(422, "Validation Failed", doc,
                        [{"resource": "Issue", "field": "state", "code": "invalid"}])
    wanted = {n.strip().lower() for n in q.get("labels", "").split(",") if n.strip()}
    since = _since(q.get("since"), doc)
    issues = [i for i in r.issues.values()
              if state in ("all", i.state)
              and wanted <= {label.name.lower() for label in i.labels}
              and (since is None or i.updated >= since)]
    key: Callable[[_Issue], Any] = {"updated": lambda i: i.touched,
                                    "comments": lambda i: (len(i.comments), i.id),
                                    }.get(q.get("sort", "created"), lambda i: i.id)
    issues.sort(key=key, reverse=q.get("direction", "desc") != "asc")
    page, headers = gh._paginate(call, issues)
    return _Reply(200, [gh._issue_json(r, i) for i in page], headers)


def _since(text: str | None, doc: str) -> float | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise _ApiError(422, "Validation Failed", doc,
                        [{"resource": "Issue", "field": "since", "code": "invalid"}]) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _list_comments(gh: FakeGitHub, call: _Call) -> _Reply:
    r, issue = gh._visible_issue(call, f"{COMMENTS_DOCS}#list-issue-comments")
    page, headers = gh._paginate(call, issue.comments)
    return _Reply(200, [gh._comment_json(r, issue, c) for c in page], headers)


def _create_comment(gh: FakeGitHub, call: _Call) -> _Reply:
    doc = f"{COMMENTS_DOCS}#create-an-issue-comment"
    r, issue = gh._visible_issue(call, doc)
    body = call.json_object(doc).get("body")
    if not isinstance(body, str) or not body.strip():
        code = "missing_field" if body is None else "custom"
        raise _ApiError(422, "Validation Failed", doc,
                        [{"resource": "IssueComment", "code": code, "field": "body"}])
    comment = _Comment(next(gh._ids), body, API_LOGIN, call.now)
    issue.comments.append(comment)
    gh._touch(issue, call.now)
    shape = gh._comment_json(r, issue, comment)
    return _Reply(201, shape, {"location": shape["url"]})


def _list_labels(gh: FakeGitHub, call: _Call) -> _Reply:
    r, issue = gh._visible_issue(call, f"{LABELS_DOCS}#list-labels-for-an-issue")
    page, headers = gh._paginate(call, issue.labels)
    return _Reply(200, [gh._label_json(r, label) for label in page], headers)


def _add_labels(gh: FakeGitHub, call: _Call) -> _Reply:
    doc = f"{LABELS_DOCS}#add-labels-to-an-issue"
    r, issue = gh._visible_issue(call, doc)
    data = call.req.body
    if not call.json_ok:
        raise _ApiError(400, "Problems parsing JSON", doc)
    raw = data.get("labels", []) if isinstance(data, dict) else data
    added = _label_names(raw if raw is not None else [], doc)
    gh._set_labels(r, issue, [label.name for label in issue.labels] + added)
    gh._touch(issue, call.now)
    return _Reply(200, [gh._label_json(r, label) for label in issue.labels])


def _label_names(raw: object, doc: str) -> list[str]:
    """Label names from a list of names or of {"name": ...} objects, as GitHub accepts."""
    if not isinstance(raw, list):
        raise _invalid("labels", raw, "an array", doc)
    names = [item.get("name") if isinstance(item, dict) else item for item in raw]
    if not all(isinstance(n, str) and n.strip() for n in names):
        raise _ApiError(422, "Validation Failed", doc,
                        [{"resource": "Label", "code": "invalid", "field": "name"}])
    return cast(list[str], names)


def _remove_label(gh: FakeGitHub, call: _Call) -> _Reply:
    doc = f"{LABELS_DOCS}#remove-a-label-from-an-issue"
    r, issue = gh._visible_issue(call, doc)
    name = call.params["label"].lower()
    if name not in {label.name.lower() for label in issue.labels}:
        raise _ApiError(404, "Label does not exist", doc)
    issue.labels = [label for label in issue.labels if label.name.lower() != name]
    gh._touch(issue, call.now)
    return _Reply(200, [gh._label_json(r, label) for label in issue.labels])


def _rate_limit(gh: FakeGitHub, call: _Call) -> _Reply:
    core = gh._windows[("core", call.authed)].current(call.now).shape()
    search = gh._windows[("search", call.authed)].current(call.now).shape()
    hour = math.ceil(call.now) + 3600
    graphql = {"limit": 5000 if call.authed else 0, "used": 0,
               "remaining": 5000 if call.authed else 0, "reset": hour}
    return _Reply(200, {"resources": {
        "core": core, "search": search, "graphql": graphql,
        "integration_manifest": {"limit": 5000, "used": 0, "remaining": 5000, "reset": hour},
        "code_search": {"limit": 10, "used": 0, "remaining": 10, "reset": hour},
    }, "rate": core})


# -- search ------------------------------------------------------------------------------------

_TOKEN = re.compile(r'(-?)([A-Za-z_-]+):("[^"]*"|\S+)|"([^"]*)"|(\S+)')
_QUALIFIERS = {"repo", "is", "state", "label", "type"}
_UNSUPPORTED = {"author", "assignee", "mentions", "commenter", "involves", "team", "created",
                "updated", "closed", "merged", "comments", "interactions", "reactions", "no",
                "in", "user", "org", "milestone", "project", "sort", "reason", "linked",
                "draft", "archived", "review", "status", "head", "base", "language"}
_KINDS = {"issue": False, "pr": True, "pull-request": True}


def _search(gh: FakeGitHub, call: _Call) -> _Reply:
    q = call.req.query.get("q", "").strip()
    if not q:
        raise _ApiError(422, "Validation Failed", SEARCH_DOCS,
                        [{"resource": "Search", "field": "q", "code": "missing"}])
    tests, kind_given = _parse_query(q, gh, call)
    if not kind_given:
        raise _ApiError(422, SEARCH_GATE, SEARCH_DOCS)
    repos = [] if gh.private and not call.authed else list(gh._repos.values())
    hits = [(r, i) for r in repos for i in r.issues.values() if all(t(r, i) for t in tests)]
    key: Callable[[tuple[_Repo, _Issue]], Any] = {
        "updated": lambda h: h[1].touched, "comments": lambda h: (len(h[1].comments), h[1].id),
    }.get(call.req.query.get("sort", ""), lambda h: h[1].id)  # best match: newest first here
    hits.sort(key=key, reverse=call.req.query.get("order", "desc") != "asc")
    page, headers = gh._paginate(call, hits, cap=SEARCH_RESULT_CAP)
    items = [{**gh._issue_json(r, i), "score": 1.0} for r, i in page]
    return _Reply(200, {"total_count": len(hits), "incomplete_results": False, "items": items},
                  headers)


Test = Callable[[_Repo, _Issue], bool]


def _parse_query(q: str, gh: FakeGitHub, call: _Call) -> tuple[list[Test], bool]:
    """The predicates a search query stands for, and whether it said is:issue / is:pr."""
    tests: list[Test] = []
    kind_given = False
    for m in _TOKEN.finditer(q):
        negate, key, value, phrase, word = m.groups()
        if key is None or key.lower() not in _QUALIFIERS | _UNSUPPORTED:
            text = (phrase if phrase is not None else word or m.group(0)).lower()
            tests.append(_mentions(text))
            continue
        key, quoted, value = key.lower(), value.startswith('"'), value.strip('"')
        if key in _UNSUPPORTED:
            raise _ApiError(422, f"fake_github does not implement the '{key}:' qualifier",
                            SEARCH_DOCS)
        test = _qualifier(key, value, quoted, gh, call)
        kind_given = kind_given or (not negate and key in ("is", "type")
                                    and value.lower() in _KINDS)
        tests.append(_negated(test) if negate else test)
    return tests, kind_given


def _mentions(text: str) -> Test:
    return lambda r, i: text in i.title.lower() or text in i.body.lower()


def _negated(test: Test) -> Test:
    return lambda r, i: not test(r, i)


def _qualifier(key: str, value: str, quoted: bool, gh: FakeGitHub, call: _Call) -> Test:
    v = value.lower()
    if key == "repo":
        if v not in gh._repos or (gh.private and not call.authed):
            raise _ApiError(422, "Validation Failed", SEARCH_DOCS, [
                {"message": UNSEARCHABLE, "resource": "Search", "field": "q", "code": "invalid"}])
        return lambda r, i: r.name.lower() == v
    if key == "label":
        anyof = {v} if quoted else {n.strip().strip('"') for n in v.split(",")}  # "," is OR
        return lambda r, i: any(label.name.lower() in anyof for label in i.labels)
    if (key in ("is", "type")) and v in _KINDS:
        return lambda r, i: i.pull_request == _KINDS[v]
    if key in ("is", "state") and v in ("open", "closed"):
        return lambda r, i: i.state == v
    raise _ApiError(422, f"fake_github does not implement '{key}:{value}'", SEARCH_DOCS)


PULLS_DOCS = "https://docs.github.com/rest/pulls/pulls"


def _pull_json(gh: FakeGitHub, r: _Repo, number: int) -> dict[str, Any]:
    pull = r.pulls[number]
    owner = r.name.partition("/")[0]
    return {"url": f"{gh.url}/repos/{r.name}/pulls/{number}", "number": number,
            "html_url": f"https://github.com/{r.name}/pull/{number}", "state": pull["state"],
            "title": pull["title"], "body": pull["body"],
            "head": {"ref": pull["head"], "label": f"{owner}:{pull['head']}"},
            "base": {"ref": pull["base"], "label": f"{owner}:{pull['base']}"}}


def _create_pull(gh: FakeGitHub, call: _Call) -> _Reply:
    """POST /repos/{o}/{r}/pulls: 422 when a field is missing or an open one has that head."""
    doc = f"{PULLS_DOCS}#create-a-pull-request"
    r = gh._visible(call, doc)
    data = call.json_object(doc)
    for key in ("head", "base", "title"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise _ApiError(422, "Validation Failed", doc,
                            [{"resource": "PullRequest", "code": "missing_field", "field": key}])
    head = str(data["head"]).rpartition(":")[2]
    if any(p["head"] == head and p["base"] == data["base"] and p["state"] == "open"
           for p in r.pulls.values()):
        owner = r.name.partition("/")[0]
        raise _ApiError(422, "Validation Failed", doc, [{
            "resource": "PullRequest", "code": "custom",
            "message": f"A pull request already exists for {owner}:{head}."}])
    number = len(r.issues) + 1
    r.issues[number] = _Issue(next(gh._ids), number, str(data["title"]), str(data.get("body") or ""),
                              [], True, created=call.now, updated=call.now,
                              touched=next(gh._touches))
    r.pulls[number] = {"head": head, "base": str(data["base"]), "title": str(data["title"]),
                       "body": str(data.get("body") or ""), "state": "open"}
    return _Reply(201, _pull_json(gh, r, number))


def _list_pulls(gh: FakeGitHub, call: _Call) -> _Reply:
    """GET /repos/{o}/{r}/pulls?head=owner:branch&state=open|closed|all."""
    r = gh._visible(call, f"{PULLS_DOCS}#list-pull-requests")
    query = dict(call.pairs)
    head = query.get("head", "").rpartition(":")[2]
    state = query.get("state", "open")
    found = [n for n, p in r.pulls.items()
             if (not head or p["head"] == head) and state in ("all", p["state"])]
    page, headers = gh._paginate(call, found)
    return _Reply(200, [_pull_json(gh, r, n) for n in page], headers)


_REPO = r"/repos/(?P<owner>[^/]+)/(?P<name>[^/]+)/issues"
_ROUTES: list[tuple[str, re.Pattern[str], Callable[[FakeGitHub, _Call], _Reply]]] = [
    ("GET", re.compile(_REPO), _list_issues),
    ("GET", re.compile(rf"{_REPO}/(?P<number>\d+)"), _get_issue),
    ("PATCH", re.compile(rf"{_REPO}/(?P<number>\d+)"), _update_issue),
    ("GET", re.compile(rf"{_REPO}/(?P<number>\d+)/comments"), _list_comments),
    ("POST", re.compile(rf"{_REPO}/(?P<number>\d+)/comments"), _create_comment),
    ("GET", re.compile(rf"{_REPO}/(?P<number>\d+)/labels"), _list_labels),
    ("POST", re.compile(rf"{_REPO}/(?P<number>\d+)/labels"), _add_labels),
    ("DELETE", re.compile(rf"{_REPO}/(?P<number>\d+)/labels/(?P<label>[^/]+)"), _remove_label),
    ("GET", re.compile(r"/search/issues"), _search),
    ("POST", re.compile(r"/repos/(?P<owner>[^/]+)/(?P<name>[^/]+)/pulls"), _create_pull),
    ("GET", re.compile(r"/repos/(?P<owner>[^/]+)/(?P<name>[^/]+)/pulls"), _list_pulls),
    ("GET", re.compile(r"/rate_limit"), _rate_limit),
]


def _request_id() -> str:
    parts = (secrets.token_hex(2), secrets.token_hex(2), secrets.token_hex(4),
             secrets.token_hex(4), secrets.token_hex(4))
    return ":".join(p.upper().lstrip("0") or "0" for p in parts)


# -- HTTP plumbing -----------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeGitHub) -> None:
        self.fake = fake
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Close kept-alive connections, so nothing is served once stopped."""
        with self._open_lock:
            for sock in self._open:
                with contextlib.suppress(OSError):  # already closed by the client
                    sock.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30  # an idle kept-alive connection's thread ends after this

    def do_GET(self) -> None:
        self._answer()

    do_POST = do_PATCH = do_PUT = do_DELETE = do_GET

    def version_string(self) -> str:
        return "GitHub.com"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the test reads `requests`; stderr stays quiet

    def _answer(self) -> None:
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        split = urlsplit(self.path)
        pairs = parse_qsl(split.query, keep_blank_values=True)
        body, json_ok = _parse_body(raw)
        req = Request(self.command, split.path, dict(pairs),
                      {k.lower(): v for k, v in self.headers.items()}, body)
        fake = cast(_Server, self.server).fake
        reply = fake._serve(req, pairs, json_ok, self.client_address[0])
        if reply is None:
            self.close_connection = True
            return
        data = json.dumps(reply.body).encode()
        self.send_response(reply.status)
        self.send_header("content-type", "application/json; charset=utf-8")
        self.send_header("content-length", str(len(data)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


def _parse_body(raw: bytes) -> tuple[object | None, bool]:
    """The body as JSON, or as text when it is not JSON (the flag says which)."""
    if not raw:
        return None, True
    text = raw.decode("utf-8", "replace")
    try:
        return cast(object, json.loads(text)), True
    except ValueError:
        return text, False
