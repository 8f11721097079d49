"""tests.helpers.fake_github: the local GitHub REST stand-in answers with GitHub's documented shapes."""

from __future__ import annotations

import http.client
import json
import math
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers.fake_github import DEFAULT_TOKEN, FakeGitHub

REPO = "acme/widgets"


@pytest.fixture
def gh() -> Iterator[FakeGitHub]:
    with FakeGitHub() as fake:
        yield fake


def call(gh: FakeGitHub, method: str, path: str, body: object = None,
         token: str | None = DEFAULT_TOKEN, scheme: str = "Bearer",
         raw: bytes | None = None) -> tuple[int, dict[str, str], Any]:
    """One request through urllib, as the adapter makes them: (status, headers, JSON body)."""
    url = path if path.startswith("http") else gh.url + path
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Accept": "application/vnd.github+json"})
    if token is not None:
        req.add_header("Authorization", f"{scheme} {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, json.load(resp)
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, json.load(e)


def links(headers: dict[str, str]) -> dict[str, str]:
    return {rel: url for url, rel in re.findall(r'<([^>]+)>; rel="(\w+)"', headers.get("link", ""))}


def test_get_issue_has_the_documented_shape_and_headers(gh: FakeGitHub) -> None:
    """An issue comes back with GitHub's fields, and every response carries the rate headers."""
    n = gh.add_issue(REPO, "Fix the frobnicator", "details", labels=["bug", "aq:queued"])
    status, headers, issue = call(gh, "GET", f"/repos/{REPO}/issues/{n}")
    assert status == 200
    assert headers["content-type"] == "application/json; charset=utf-8"
    for name in ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset",
                 "x-ratelimit-used", "x-ratelimit-resource", "x-github-request-id"):
        assert name in headers
    assert headers["x-ratelimit-resource"] == "core"
    assert issue["number"] == n == 1
    assert issue["title"] == "Fix the frobnicator" and issue["body"] == "details"
    assert issue["state"] == "open" and issue["state_reason"] is None
    assert issue["closed_at"] is None and issue["comments"] == 0
    assert issue["html_url"] == f"https://github.com/{REPO}/issues/1"
    assert issue["url"] == f"{gh.url}/repos/{REPO}/issues/1"
    assert issue["user"]["login"] and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ",
                                                   issue["created_at"])
    assert [label["name"] for label in issue["labels"]] == ["aq:queued", "bug"]
    assert set(issue["labels"][0]) >= {"id", "name", "color", "default", "description"}
    assert "pull_request" not in issue and isinstance(issue["id"], int) and issue["node_id"]


def test_unknown_repo_number_or_route_is_a_github_404(gh: FakeGitHub) -> None:
    """Anything that does not exist is 404 {"message": "Not Found", "documentation_url"}."""
    gh.add_issue(REPO, "one")
    for path in ("/repos/acme/nope/issues/1", f"/repos/{REPO}/issues/9", "/nowhere"):
        status, _, body = call(gh, "GET", path)
        assert status == 404 and body["message"] == "Not Found" and body["documentation_url"]


def test_numbers_are_shared_by_issues_and_pull_requests(gh: FakeGitHub) -> None:
    """Issues and PRs draw from one counter per repo; a PR carries "pull_request"."""
    assert gh.add_issue(REPO, "issue") == 1
    assert gh.add_issue(REPO, "pr", pull_request=True) == 2
    assert gh.add_issue("other/repo", "first there") == 1
    _, _, pr = call(gh, "GET", f"/repos/{REPO}/issues/2")
    assert pr["pull_request"]["html_url"] == f"https://github.com/{REPO}/pull/2"


def test_patch_updates_and_closes_with_a_state_reason(gh: FakeGitHub) -> None:
    """PATCH changes fields; closing defaults state_reason to completed, reopening to reopened."""
    n = gh.add_issue(REPO, "old", labels=["x"])
    status, _, issue = call(gh, "PATCH", f"/repos/{REPO}/issues/{n}",
                            {"title": "new", "labels": ["y", "z"], "state": "closed"})
    assert status == 200 and issue["title"] == "new" and issue["state"] == "closed"
    assert issue["state_reason"] == "completed" and issue["closed_at"] is not None
    assert gh.labels(REPO, n) == ["y", "z"] and gh.state(REPO, n) == "closed"
    call(gh, "PATCH", f"/repos/{REPO}/issues/{n}", {"state_reason": "not_planned"})
    assert gh.state_reason(REPO, n) == "not_planned"
    _, _, issue = call(gh, "PATCH", f"/repos/{REPO}/issues/{n}", {"state": "open"})
    assert issue["state_reason"] == "reopened" and issue["closed_at"] is None
    status, _, body = call(gh, "PATCH", f"/repos/{REPO}/issues/{n}", {"state": "shut"})
    assert status == 422
    status, _, body = call(gh, "PATCH", f"/repos/{REPO}/issues/{n}", raw=b"{nope")
    assert status == 400 and body["message"] == "Problems parsing JSON"


def test_list_issues_filters_by_state_and_labels_and_includes_prs(gh: FakeGitHub) -> None:
    """The list defaults to open, newest first; labels=a,b requires both; PRs are included."""
    gh.add_issue(REPO, "a", labels=["ready"])
    gh.add_issue(REPO, "b", labels=["ready", "aq"])
    gh.add_issue(REPO, "c", labels=["ready", "aq"], state="closed")
    gh.add_issue(REPO, "d", labels=["ready", "aq"], pull_request=True)

    def titles(query: str) -> list[str]:
        status, _, items = call(gh, "GET", f"/repos/{REPO}/issues?{query}")
        assert status == 200
        return [i["title"] for i in items]

    assert titles("") == ["d", "b", "a"]
    assert titles("state=closed") == ["c"]
    assert titles("state=all&labels=aq,ready") == ["d", "c", "b"]
    assert titles("labels=aq&direction=asc") == ["b", "d"]


def test_pagination_follows_link_across_three_pages(gh: FakeGitHub) -> None:
    """Link gives next/last on the first page, all four in the middle, prev/first at the end,
    as absolute URLs that keep the other query parameters; per_page is capped."""
    gh.per_page_max = 2
    for i in range(5):
        gh.add_issue(REPO, f"t{i}", labels=["q"])
    url: str | None = f"{gh.url}/repos/{REPO}/issues?labels=q&per_page=50"
    pages: list[list[str]] = []
    rels: list[set[str]] = []
    while url:
        status, headers, items = call(gh, "GET", url)
        assert status == 200
        pages.append([i["title"] for i in items])
        found = links(headers)
        rels.append(set(found))
        for target in found.values():
            assert target.startswith(f"{gh.url}/repos/{REPO}/issues?")
            assert "labels=q" in target and "per_page=50" in target
        url = found.get("next")
    assert pages == [["t4", "t3"], ["t2", "t1"], ["t0"]]
    assert rels == [{"next", "last"}, {"prev", "next", "last", "first"}, {"prev", "first"}]
    _, headers, _ = call(gh, "GET", f"/repos/{REPO}/issues?per_page=50&page=2")
    assert links(headers)["last"].endswith("page=3")


def test_one_page_has_no_link_and_default_per_page_is_30(gh: FakeGitHub) -> None:
    """GitHub omits Link when everything fits; the default page holds 30."""
    gh.add_issue(REPO, "only")
    _, headers, _ = call(gh, "GET", f"/repos/{REPO}/issues")
    assert "link" not in headers
    for i in range(31):
        gh.add_issue(REPO, f"more {i}")
    _, headers, items = call(gh, "GET", f"/repos/{REPO}/issues")
    assert len(items) == 30 and links(headers)["next"].endswith("page=2")


def test_comments_are_posted_listed_and_validated(gh: FakeGitHub) -> None:
    """POST makes a 201 comment; GET lists them oldest first, paginated; empty body is 422."""
    n = gh.add_issue(REPO, "talk")
    gh.add_comment(REPO, n, "seeded")
    status, headers, comment = call(gh, "POST", f"/repos/{REPO}/issues/{n}/comments",
                                    {"body": "claimed by worker-1"})
    assert status == 201 and comment["body"] == "claimed by worker-1"
    assert headers["location"] == comment["url"]
    assert comment["html_url"] == f"https://github.com/{REPO}/issues/{n}#issuecomment-{comment['id']}"
    assert set(comment) >= {"id", "node_id", "user", "created_at", "updated_at"}
    for body in ({"body": ""}, {}):
        status, _, error = call(gh, "POST", f"/repos/{REPO}/issues/{n}/comments", body)
        assert status == 422 and error["message"] == "Validation Failed" and error["errors"]
    gh.per_page_max = 1
    _, headers, first = call(gh, "GET", f"/repos/{REPO}/issues/{n}/comments")
    assert [c["body"] for c in first] == ["seeded"] and "next" in links(headers)
    assert gh.comments(REPO, n) == ["seeded", "claimed by worker-1"]
    _, _, issue = call(gh, "GET", f"/repos/{REPO}/issues/{n}")
    assert issue["comments"] == 2


def test_labels_are_added_and_removed(gh: FakeGitHub) -> None:
    """POST labels adds (creating new ones) and returns all; DELETE takes a URL-encoded name and
    returns what is left; a label not on the issue is 404 "Label does not exist"."""
    n = gh.add_issue(REPO, "work", labels=["bug"])
    status, _, labels = call(gh, "POST", f"/repos/{REPO}/issues/{n}/labels",
                             {"labels": ["aq:in-progress", "bug"]})
    assert status == 200 and [label["name"] for label in labels] == ["aq:in-progress", "bug"]
    status, _, labels = call(gh, "DELETE", f"/repos/{REPO}/issues/{n}/labels/aq%3Ain-progress")
    assert status == 200 and [label["name"] for label in labels] == ["bug"]
    status, _, error = call(gh, "DELETE", f"/repos/{REPO}/issues/{n}/labels/aq%3Ain-progress")
    assert status == 404 and error["message"] == "Label does not exist"
    assert gh.labels(REPO, n) == ["bug"]


def test_search_honours_its_qualifiers(gh: FakeGitHub) -> None:
    """repo:, is:, state:, label: (quoted, several = all) and free words each narrow the hits."""
    gh.add_issue(REPO, "Deploy the API", "needs a token", labels=["aq", "help wanted"])
    gh.add_issue(REPO, "Deploy docs", labels=["aq"], state="closed")
    gh.add_issue(REPO, "Deploy PR", labels=["aq", "help wanted"], pull_request=True)
    gh.add_issue("other/repo", "Deploy elsewhere", labels=["aq"])

    def search(q: str, sep: str = "+") -> list[str]:
        query = urllib.parse.quote(q, safe="").replace("%20", sep)
        status, headers, body = call(gh, "GET", f"/search/issues?q={query}")
        assert status == 200 and body["incomplete_results"] is False
        assert headers["x-ratelimit-resource"] == "search"
        assert body["total_count"] == len(body["items"])
        assert all(item["score"] for item in body["items"])
        return sorted(item["title"] for item in body["items"])

    assert search(f"repo:{REPO} is:issue") == ["Deploy docs", "Deploy the API"]
    assert search(f"repo:{REPO} is:pr") == ["Deploy PR"]
    assert search(f"repo:{REPO} is:issue is:open") == ["Deploy the API"]
    assert search(f"repo:{REPO} is:issue state:closed", sep="%20") == ["Deploy docs"]
    assert search(f'repo:{REPO} is:issue label:aq label:"help wanted"') == ["Deploy the API"]
    assert search("is:issue label:aq deploy") == ["Deploy docs", "Deploy elsewhere",
                                                  "Deploy the API"]
    assert search("is:issue TOKEN") == ["Deploy the API"]
    assert search(f"repo:{REPO} is:issue -label:\"help wanted\"") == ["Deploy docs"]


def test_search_rejects_what_github_rejects(gh: FakeGitHub) -> None:
    """No is:issue/is:pr, an unknown repo, or no q at all: 422 as on GitHub."""
    gh.add_issue(REPO, "x")
    status, _, body = call(gh, "GET", f"/search/issues?q=repo:{REPO}")
    assert status == 422 and "is:issue" in body["message"]
    status, _, body = call(gh, "GET", "/search/issues?q=repo:acme/ghost+is:issue")
    assert status == 422 and body["errors"][0]["code"] == "invalid"
    status, _, body = call(gh, "GET", "/search/issues")
    assert status == 422 and body["message"] == "Validation Failed"


def test_search_paginates(gh: FakeGitHub) -> None:
    """Search pages like the lists do and counts every hit in total_count."""
    gh.per_page_max = 2
    for i in range(3):
        gh.add_issue(REPO, f"s{i}")
    _, headers, body = call(gh, "GET", f"/search/issues?q=repo:{REPO}+is:issue")
    assert body["total_count"] == 3 and len(body["items"]) == 2
    _, _, body = call(gh, "GET", links(headers)["next"])
    assert [i["title"] for i in body["items"]] == ["s0"]


def test_rate_limit_endpoint_has_the_documented_shape(gh: FakeGitHub) -> None:
    """GET /rate_limit: resources.core/search/graphql with limit, used, remaining, reset."""
    call(gh, "GET", f"/repos/{REPO}/issues")  # a 404 still counts
    status, _, body = call(gh, "GET", "/rate_limit")
    assert status == 200
    core = body["resources"]["core"]
    assert set(core) == {"limit", "used", "remaining", "reset"} and body["rate"] == core
    assert core["used"] == 1 and core["remaining"] == core["limit"] - 1
    assert {"search", "graphql"} <= set(body["resources"])


def test_fail_next_matches_method_and_path_for_times(gh: FakeGitHub) -> None:
    """A queued fault hits only matching requests, `times` times, with its headers/message."""
    n = gh.add_issue(REPO, "x")
    gh.fail_next(502, times=2, method="POST", path=r"/comments$",
                 headers={"retry-after": "3"}, message="Server Error")
    assert call(gh, "GET", f"/repos/{REPO}/issues/{n}")[0] == 200
    for _ in range(2):
        status, headers, body = call(gh, "POST", f"/repos/{REPO}/issues/{n}/comments",
                                     {"body": "hi"})
        assert status == 502 and headers["retry-after"] == "3"
        assert body["message"] == "Server Error" and body["documentation_url"]
    assert call(gh, "POST", f"/repos/{REPO}/issues/{n}/comments", {"body": "hi"})[0] == 201
    gh.fail_next(500)
    status, _, body = call(gh, "GET", "/rate_limit")
    assert status == 500 and body["message"] == "Internal Server Error"


def test_status_zero_drops_the_connection(gh: FakeGitHub) -> None:
    """fail_next(0) closes the connection unanswered: the client sees an error, no status."""
    n = gh.add_issue(REPO, "x")
    gh.fail_next(0, method="POST")
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError, urllib.error.URLError)
                       ) as caught:
        call(gh, "POST", f"/repos/{REPO}/issues/{n}/comments", {"body": "lost"})
    assert not isinstance(caught.value, urllib.error.HTTPError)
    assert gh.comments(REPO, n) == [] and gh.requests[-1].body == {"body": "lost"}
    assert call(gh, "GET", f"/repos/{REPO}/issues/{n}")[0] == 200


def test_primary_rate_limit(gh: FakeGitHub) -> None:
    """403 with x-ratelimit-remaining 0 and a reset rounded up from now + reset_in."""
    gh.rate_limit_next(reset_in=1.5)
    before = time.time()
    status, headers, body = call(gh, "GET", "/rate_limit")
    assert status == 403 and headers["x-ratelimit-remaining"] == "0"
    assert math.ceil(before + 1.5) <= int(headers["x-ratelimit-reset"]) <= math.ceil(time.time() + 1.5)
    assert body["message"].startswith("API rate limit exceeded for ")
    assert call(gh, "GET", "/rate_limit")[0] == 200


def test_secondary_rate_limit(gh: FakeGitHub) -> None:
    """403 with retry-after and the secondary-limit message; remaining is not zero."""
    gh.rate_limit_next(secondary=True, reset_in=2.2, times=2)
    for _ in range(2):
        status, headers, body = call(gh, "GET", "/rate_limit")
        assert status == 403 and headers["retry-after"] == "3"
        assert body["message"].startswith("You have exceeded a secondary rate limit")
        assert headers["x-ratelimit-remaining"] != "0"
    assert call(gh, "GET", "/rate_limit")[0] == 200


def test_auth(gh: FakeGitHub) -> None:
    """Bearer and token schemes work; a wrong token is 401 Bad credentials even for reads;
    no token may read but not write."""
    n = gh.add_issue(REPO, "x")
    path = f"/repos/{REPO}/issues/{n}"
    assert call(gh, "GET", path, scheme="token")[0] == 200
    status, _, body = call(gh, "GET", path, token="ghp_wrong")
    assert status == 401 and body["message"] == "Bad credentials"
    assert call(gh, "GET", path, token=None)[0] == 200
    status, _, body = call(gh, "POST", f"{path}/comments", {"body": "x"}, token=None)
    assert status == 401 and body["message"] == "Requires authentication"
    for method, sub, payload in (("PATCH", "", {"title": "y"}), ("DELETE", "/labels/a", None)):
        assert call(gh, method, path + sub, payload, token=None)[0] == 401
    assert gh.comments(REPO, n) == []


def test_private_repos_hide_from_anonymous_readers() -> None:
    """With private=True an anonymous read is 404, as GitHub hides private repos."""
    with FakeGitHub(private=True) as gh:
        n = gh.add_issue(REPO, "secret")
        status, _, body = call(gh, "GET", f"/repos/{REPO}/issues/{n}", token=None)
        assert status == 404 and body["message"] == "Not Found"
        assert call(gh, "GET", f"/repos/{REPO}/issues/{n}")[0] == 200


def test_token_none_accepts_any_token() -> None:
    """FakeGitHub(token=None) takes whatever token the client sends."""
    with FakeGitHub(token=None) as gh:
        n = gh.add_issue(REPO, "x")
        assert call(gh, "POST", f"/repos/{REPO}/issues/{n}/comments", {"body": "y"},
                    token="anything")[0] == 201


def test_requests_are_recorded(gh: FakeGitHub) -> None:
    """Every request is kept: method, raw path, decoded query, lower-case headers, JSON body."""
    n = gh.add_issue(REPO, "x")
    call(gh, "POST", f"/repos/{REPO}/issues/{n}/labels", {"labels": ["a b"]})
    call(gh, "DELETE", f"/repos/{REPO}/issues/{n}/labels/a%20b")
    call(gh, "GET", "/search/issues?q=is:issue+label:%22a+b%22&per_page=5")
    post, delete, search = gh.requests
    assert post.method == "POST" and post.body == {"labels": ["a b"]}
    assert post.headers["authorization"] == f"Bearer {DEFAULT_TOKEN}"
    assert delete.path == f"/repos/{REPO}/issues/{n}/labels/a%20b" and delete.body is None
    assert search.query == {"q": 'is:issue label:"a b"', "per_page": "5"}


def test_set_issue_changes_what_the_api_serves(gh: FakeGitHub) -> None:
    """set_issue edits behind the adapter's back; closing records a reason."""
    n = gh.add_issue(REPO, "x")
    gh.set_issue(REPO, n, title="y", labels=["l"], state="closed", state_reason="not_planned")
    _, _, issue = call(gh, "GET", f"/repos/{REPO}/issues/{n}")
    assert (issue["title"], issue["state"], issue["state_reason"]) == ("y", "closed",
                                                                       "not_planned")
    assert [label["name"] for label in issue["labels"]] == ["l"]
    with pytest.raises(TypeError):
        gh.set_issue(REPO, n, colour="red")
