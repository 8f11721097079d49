"""GitHub issues through the REST API (api.github.com, or an Enterprise server's api_url).

Standard library HTTP: a few JSON calls do not need a client library. The token comes from
the environment (GITHUB_TOKEN by default, else `gh auth token`) and never appears in an error,
a log or the queue. Status: GitHub issues are only open or closed, so "in progress" is a label
(aq:in-progress) and "done" closes the issue as completed.
"""

from __future__ import annotations

import http.client
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from email.message import Message
from typing import Any

from aq.trackers.base import GITHUB_REPO, Item, Post, Ref, TrackerError, our_priority
from aq.trackers.settings import DONE, IN_PROGRESS, GitHubSettings

TRIES = 4
MAX_WAIT = 60.0  # a rate limit lifting later than this is reported, not waited for
TIMEOUT = 30.0
MARK = "<!-- aq:{key} -->"  # ends each comment aq posts: a retry finds it and does not post again


class GitHub:
    def __init__(self, settings: GitHubSettings, env: Mapping[str, str],
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self.api = settings.api_url.rstrip("/")
        self._env = env
        self._token: str | None = None
        self._token_looked = False
        self._sleep = sleep

    # --- reading ---------------------------------------------------------------------------

    def fetch(self, ref: Ref) -> Item:
        repo, number = _split(ref)
        data = self._call("GET", f"/repos/{repo}/issues/{number}", what=f"issue {ref.item}")
        if "pull_request" in data:
            raise TrackerError(f"{ref} is a pull request, not an issue: import issues only")
        return self._item(repo, data)

    def query(self, query: str, label: str | None) -> list[Item]:
        """Open issues of OWNER/REPO with the label (default agent:run): listed (no cap, no
        search quota). Words after the repo (e.g. `milestone:v2`) make it a search, refused
        when GitHub says it is incomplete or holds more than the 1,000 results it returns."""
        repo, _, extra = query.strip().partition(" ")
        if not GITHUB_REPO.fullmatch(repo):
            raise TrackerError(f"github:{query} is not a query: expected github:OWNER/REPO "
                               "(then search words if you like, e.g. 'milestone:v2')")
        wanted = label or self.settings.label
        if not extra.strip():
            return [self._item(repo, issue)
                    for page in self._pages(f"/repos/{repo}/issues",
                                            {"state": "open", "labels": wanted, "per_page": "100"},
                                            f"the open issues of {repo} labelled {wanted}")
                    for issue in page if "pull_request" not in issue]
        terms = [f"repo:{repo}", "is:issue", "is:open"]
        if label or not re.search(r"(?<![-\w])label:", extra):  # a negated -label: is no choice
            terms.append(f'label:"{wanted}"')
        terms.append(extra.strip())
        what = f"the search for {' '.join(terms)!r}"
        items: list[Item] = []
        for page in self._pages("/search/issues", {"q": " ".join(terms), "per_page": "100"}, what):
            if page.get("incomplete_results"):
                raise TrackerError(f"GitHub timed out on {what} and returned part of it: aq "
                                   "tries again later", retry=True)
            if int(page.get("total_count") or 0) > 1000:
                raise TrackerError(f"GitHub: {what} finds {page['total_count']} issues, more than "
                                   "the 1,000 a search returns: narrow it")
            items += [self._item(repo, issue) for issue in page["items"]
                      if "pull_request" not in issue]
        return items

    def _item(self, repo: str, data: Mapping[str, Any]) -> Item:
        labels = tuple(str(label["name"] if isinstance(label, dict) else label)
                       for label in data.get("labels") or ())
        priority = next((our_priority(label.partition(":")[2]) for label in labels
                         if label.lower().startswith("priority:")), None)
        return Item(
            ref=Ref("github", f"{repo.lower()}#{data['number']}"), title=str(data.get("title") or ""),
            body=str(data.get("body") or "").replace("\r\n", "\n"), labels=labels,
            priority=priority, status=str(data.get("state") or ""),
            open=data.get("state") == "open", url=data.get("html_url"),
        )

    # --- writing ---------------------------------------------------------------------------

    def post(self, ref: Ref, post: Post) -> str | None:
        repo, number = _split(ref)
        issue = f"/repos/{repo}/issues/{number}"
        self._need_token("post to " + str(ref))
        label = self.settings.in_progress_label
        if post.status == IN_PROGRESS:  # never on an issue closed meanwhile (shipped first)
            if self._call("GET", issue, what=f"issue {ref.item}").get("state") == "open":
                self._call("POST", f"{issue}/labels", {"labels": [label]}, what=f"issue {ref.item}")
        elif post.status == DONE:
            try:
                self._call("DELETE", f"{issue}/labels/{urllib.parse.quote(label, safe='')}",
                           what=f"label {label} of {ref.item}")
            except TrackerError as err:
                if err.status != 404:
                    raise  # a label not there is already removed
            if self.settings.close_on_ship:
                self._call("PATCH", issue, {"state": "closed", "state_reason": "completed"},
                           what=f"issue {ref.item}")
        mark = MARK.format(key=post.key)
        for page in self._pages(f"{issue}/comments", {"per_page": "100"}, f"comments of {ref.item}"):
            for comment in page:
                if mark in str(comment.get("body") or ""):
                    return str(comment.get("html_url") or "") or None  # sent before: not again
        # not retried here: a comment made whose answer was lost would be made twice. The owed
        # post is sent again later, after looking for its marker.
        made = self._call("POST", f"{issue}/comments", {"body": f"{post.comment}\n\n{mark}"},
                          what=f"issue {ref.item}", once=True)
        return str(made.get("html_url") or "") or None

    def open_pull_request(self, repo: str, head: str, base: str, title: str, body: str) -> str:
        """A pull request of branch `head` into `base` of OWNER/REPO (the one open already, if
        there is one); its page."""
        self._need_token(f"open a pull request on {repo}")
        pulls = f"/repos/{repo}/pulls"
        try:
            made = self._call("POST", pulls, {"title": title, "head": head, "base": base,
                                              "body": body}, what=f"a pull request on {repo}",
                              once=True)
            return str(made.get("html_url") or "")
        except TrackerError as err:
            if err.status != 422:
                raise
        owner = repo.partition("/")[0]
        for page in self._pages(pulls, {"head": f"{owner}:{head}", "state": "open"},
                                f"the pull requests of {repo}"):
            for pull in page:
                if pull.get("base", {}).get("ref") == base:
                    return str(pull.get("html_url") or "")
        raise TrackerError(f"GitHub refused a pull request of {head} into {base} on {repo} (422): "
                           "check that both branches exist there")

    # --- HTTP --------------------------------------------------------------------------------

    def _pages(self, path: str, params: Mapping[str, str], what: str) -> Any:
        url: str | None = f"{self.api}{path}?{urllib.parse.urlencode(params)}"
        seen = 0
        while url is not None:
            data, headers = self._request("GET", url, None, what)
            yield data
            url = _next_link(headers.get("link"))
            seen += 1
            if seen > 100:
                raise TrackerError(f"GitHub: {what} has more than 100 pages: narrow the query")

    def _call(self, method: str, path: str, body: object = None, *, what: str,
              once: bool = False) -> Any:
        data, _ = self._request(method, f"{self.api}{path}", body, what, once)
        return data

    def _request(self, method: str, url: str, body: object, what: str, once: bool = False
                 ) -> tuple[Any, Message]:
        """One call, tried again after a short rate limit, a 5xx or a lost connection; with
        `once` (a call that must not be made twice) never: the error says to try later."""
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28",
                   "User-Agent": "aq-tracker"}
        token = self._get_token()
        if payload is not None:
            headers["Content-Type"] = "application/json"
        if not _same_origin(url, self.api):
            raise TrackerError(f"GitHub pointed {what} to {urllib.parse.urlsplit(url).netloc}, "
                               f"not {urllib.parse.urlsplit(self.api).netloc}: not followed")
        for attempt in range(TRIES):
            request = urllib.request.Request(url, payload, headers, method=method)
            if token:  # never carried over a redirect to another host
                request.add_unredirected_header("Authorization", f"Bearer {token}")
            try:
                with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                    raw = response.read()
                    return (json.loads(raw) if raw else None), response.headers
            except urllib.error.HTTPError as err:
                wait = self._failure(err, method, what, TRIES - 1 if once else attempt)
            except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as err:
                reason = getattr(err, "reason", None) or err.__class__.__name__
                if attempt == TRIES - 1 or once:
                    raise TrackerError(f"GitHub at {self.api} did not answer ({reason}) for "
                                       f"{what}; aq tries again later", retry=True) from None
                wait = 2.0 ** attempt
            self._sleep(wait)
        raise AssertionError("unreachable")  # the last try raises

    def _failure(self, err: urllib.error.HTTPError, method: str, what: str, attempt: int) -> float:
        """How long to wait before trying again, or raise what a person should know."""
        status, headers = err.code, err.headers
        message = _message(err)
        last = attempt == TRIES - 1
        if status == 429 or (status == 403 and (headers.get("x-ratelimit-remaining") == "0"
                                                or headers.get("retry-after")
                                                or "rate limit" in message.lower())):
            wait = _rate_wait(headers)  # GitHub: with no header, wait at least a minute
            if wait > MAX_WAIT or attempt == TRIES - 1:
                when = time.strftime("%H:%M:%S", time.localtime(time.time() + wait))
                raise TrackerError(f"GitHub rate limit reached for {what} (until about {when}): "
                                   "aq tries again later", retry=True)
            return wait
        if status >= 500 and not last:
            return 2.0 ** attempt
        if status >= 500:
            raise TrackerError(f"GitHub answered {status} for {what}; aq tries again later",
                               retry=True)
        if status == 401:
            hint = (f"set {self.settings.token_env} (or run 'gh auth login') to a token that may "
                    "read and write issues") if not self._get_token() else (
                    f"the token in {self.settings.token_env} (or gh's) is wrong or expired: renew it")
            raise TrackerError(f"GitHub refused the request for {what} (401 {message}): {hint}",
                               status=401, everywhere=True)
        if status == 403:
            raise TrackerError(f"GitHub forbids {method} on {what} (403 {message}): the token "
                               "needs access to the repository's issues (Issues: read and write)")
        if status == 404:
            raise TrackerError(f"GitHub has no {what} (404): check the owner, repo and number, "
                               "and that the token can see a private repository", status=404)
        if status == 422:
            raise TrackerError(f"GitHub refused {method} on {what} (422 {message})", status=422)
        if status == 410:
            raise TrackerError(f"GitHub: {what} is gone (410 {message}): issues may be off for the repository")
        raise TrackerError(f"GitHub refused {method} on {what} ({status} {message})")

    def _get_token(self) -> str | None:
        if not self._token_looked:
            self._token_looked = True
            self._token = self._env.get(self.settings.token_env) or _gh_token(self._env)
        return self._token

    def _need_token(self, what: str) -> None:
        if not self._get_token():
            raise TrackerError(f"no GitHub token to {what}: set {self.settings.token_env}, or "
                               "install gh and run 'gh auth login'", everywhere=True)


def _split(ref: Ref) -> tuple[str, int]:
    repo, _, number = ref.item.partition("#")
    return repo, int(number)


def _gh_token(env: Mapping[str, str]) -> str | None:
    import shutil

    from aq.infra import proc

    gh = shutil.which("gh", path=env.get("PATH"))
    if gh is None:
        return None
    try:
        done = proc.run([gh, "auth", "token"], timeout=10, env=dict(env))
    except OSError:
        return None
    token = done.stdout.strip()
    return token if done.returncode == 0 and token else None


def _message(err: urllib.error.HTTPError) -> str:
    try:
        data = json.loads(err.read() or b"{}")
    except (ValueError, OSError):
        return err.reason or ""
    text = str(data.get("message") or err.reason or "") if isinstance(data, dict) else ""
    return text.splitlines()[0][:200] if text else ""


def _rate_wait(headers: Message) -> float:
    after = headers.get("retry-after")
    if after and after.strip().isdigit():
        return float(after)
    reset = headers.get("x-ratelimit-reset")
    if reset and reset.strip().isdigit():
        return max(1.0, float(reset) - time.time())
    return MAX_WAIT + 1  # none said: GitHub asks for at least a minute, so not waited for here


def _same_origin(url: str, api: str) -> bool:
    ours, theirs = urllib.parse.urlsplit(api), urllib.parse.urlsplit(url)
    return (ours.scheme, ours.netloc) == (theirs.scheme, theirs.netloc)


def _next_link(link: str | None) -> str | None:
    for part in (link or "").split(","):
        match = re.match(r'\s*<([^>]+)>\s*;\s*rel="?next"?', part)
        if match:
            return match.group(1)
    return None
