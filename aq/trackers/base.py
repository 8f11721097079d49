"""Trackers: where people plan (GitHub issues, a Backlog.md project, any tracker with a CLI).

An adapter reads an item (`fetch`), lists the items a query returns (`query`) and reports a
job's progress back to its item (`post`). This module holds what every adapter shares: the
item reference (`github:owner/repo#12`, `backlog:TASK-3`, `cmd:jira:PROJ-7`), the item as aq
sees it, a post, the error an adapter raises, and the `trackers:` settings of aq.yaml. It is
imported by the config loader, so it stays light: the adapters are imported only when used.
"""

from __future__ import annotations

import functools
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from aq.errors import AqError, UsageError

KINDS = ("github", "backlog", "cmd")
IN_PROGRESS = "in_progress"
DONE = "done"


class TrackerError(AqError):
    """A tracker did not do what was asked. `retry` says whether trying later may help (it
    was down, rate-limited, timed out) or a person must act (bad token, no such item)."""

    def __init__(self, message: str, *, retry: bool = False, status: int | None = None,
                 everywhere: bool = False) -> None:
        super().__init__(message)
        self.retry = retry
        self.status = status  # an HTTP status, where there was one
        self.everywhere = everywhere  # not this item's trouble: no item of the tracker will do


# --- references ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Ref:
    kind: str  # github, backlog, cmd
    item: str  # github: owner/repo#12; backlog: TASK-3; cmd: the id given to the command
    adapter: str = ""  # cmd: the adapter's name in aq.yaml

    def __str__(self) -> str:
        return f"cmd:{self.adapter}:{self.item}" if self.kind == "cmd" else f"{self.kind}:{self.item}"


_GITHUB = re.compile(r"(?P<repo>[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+)#(?P<number>[1-9][0-9]*)")
_BACKLOG = re.compile(r"[A-Za-z]+-[0-9]+(?:\.[0-9]+)*")
_NAME = re.compile(r"[A-Za-z0-9_-]+")
EXAMPLES = "github:OWNER/REPO#N, backlog:TASK-N or cmd:NAME:ID"


def parse_ref(text: str) -> Ref:
    """A tracker item reference, checked; raises UsageError saying what a good one looks like."""
    kind, sep, rest = text.strip().partition(":")
    if not sep or kind not in KINDS:
        raise UsageError(f"{text!r} is not a tracker item: expected {EXAMPLES}")
    if kind == "github":
        if not _GITHUB.fullmatch(rest):
            raise UsageError(f"{text!r} is not a GitHub issue: expected github:OWNER/REPO#N")
        return Ref("github", rest.lower())  # GitHub's names ignore case: one item, one job
    if kind == "backlog":
        if not _BACKLOG.fullmatch(rest):
            raise UsageError(f"{text!r} is not a Backlog.md task: expected backlog:TASK-N")
        return Ref("backlog", rest.upper())
    name, sep, item = rest.partition(":")
    if not sep or not _NAME.fullmatch(name) or not item.strip() or any(c.isspace() for c in item):
        raise UsageError(f"{text!r} is not a command tracker item: expected cmd:NAME:ID, NAME "
                         "being an adapter under trackers.cmd in aq.yaml")
    return Ref("cmd", item, name)


# --- items and posts -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Item:
    """A tracker item as aq reads it: enough to make a job from."""

    ref: Ref
    title: str
    body: str
    labels: tuple[str, ...] = ()
    priority: str | None = None  # already one of aq's priorities, or None
    status: str | None = None  # the tracker's own words, for a person
    open: bool = True  # False: closed or done in the tracker
    url: str | None = None


@dataclass(frozen=True, slots=True)
class Post:
    """What one move of a job says to its item: a comment, and maybe a status."""

    key: str  # names this post: an adapter that can read comments back skips one it finds
    comment: str
    status: str | None = None  # IN_PROGRESS, DONE, or None to leave it


class Tracker(Protocol):
    def fetch(self, ref: Ref) -> Item: ...

    def query(self, query: str, label: str | None) -> list[Item]: ...

    def post(self, ref: Ref, post: Post) -> str | None:
        """Send the post; idempotent where the tracker lets aq read its comments. Returns
        where the comment is (a URL), when the tracker says."""
        ...


# --- settings (aq.yaml `trackers:`) ----------------------------------------------------------

@dataclass(frozen=True, slots=True)
class GitHubSettings:
    api_url: str = "https://api.github.com"
    token_env: str = "GITHUB_TOKEN"
    label: str = "agent:run"  # `aq from-tracker --query github:OWNER/REPO` imports open issues with it
    in_progress_label: str = "aq:in-progress"  # GitHub has no "in progress": a label says it
    close_on_ship: bool = True


@dataclass(frozen=True, slots=True)
class BacklogSettings:
    path: str | None = None  # the Backlog.md project, relative to the queue's root
    command: tuple[str, ...] = ("backlog",)
    label: str | None = None  # a query imports the tasks in `todo` status (with this label)
    todo: str = "To Do"
    in_progress: str = "In Progress"
    done: str = "Done"


@dataclass(frozen=True, slots=True)
class CommandSettings:
    """A tracker reached through its own CLI, which prints JSON. Templates are argument lists
    (a string is split like a shell would); placeholders {id}, {query}, {label}, {text},
    {status} are replaced inside arguments, never passed through a shell."""

    name: str
    view: tuple[str, ...]
    query: tuple[str, ...] | None = None  # prints a JSON list (or {items: [...]}) of items
    comment: tuple[str, ...] | None = None
    status: tuple[str, ...] | None = None
    fields: Mapping[str, str] = field(default_factory=dict)  # title/body/... -> dotted JSON path
    statuses: Mapping[str, str] = field(default_factory=dict)  # in_progress/done -> its words
    closed: tuple[str, ...] = ("closed", "done", "resolved")  # its statuses that mean finished
    priorities: Mapping[str, str] = field(default_factory=dict)  # its priority -> ours
    secret_env: tuple[str, ...] = ()  # env vars it reads its credentials from (scrubbed)
    label: str | None = None
    timeout: float = 60.0


@dataclass(frozen=True, slots=True)
class TrackerSettings:
    github: GitHubSettings = field(default_factory=GitHubSettings)
    backlog: BacklogSettings = field(default_factory=BacklogSettings)
    commands: Mapping[str, CommandSettings] = field(default_factory=dict)
    takeover: float = 600.0  # a post its mover did not send is sent by another after this


def secret_names(settings: TrackerSettings) -> tuple[str, ...]:
    """The environment variables aq.yaml says hold tracker credentials, whatever their names:
    scrubbed from logs, events and posts like any *TOKEN*."""
    return (settings.github.token_env,
            *(name for spec in settings.commands.values() for name in spec.secret_env))


FIELD_NAMES = ("id", "title", "body", "labels", "priority", "status", "url")


def parse_settings(raw: object, source: str) -> TrackerSettings:
    """aq.yaml's `trackers:` mapping, checked key by key (ValueError names the key)."""
    from aq.core.durations import parse_duration

    del source
    if raw is None:
        return TrackerSettings()
    table = _mapping(raw, "trackers", ("github", "backlog", "cmd", "takeover"))
    github = _section(table.get("github"), "trackers.github", GitHubSettings, {
        "api_url": _url, "token_env": _env_name, "label": _text, "in_progress_label": _text,
        "close_on_ship": _flag})
    backlog = _section(table.get("backlog"), "trackers.backlog", BacklogSettings, {
        "path": _text, "command": _argv, "label": _text, "todo": _text, "in_progress": _text,
        "done": _text})
    commands = {}
    for name, spec in _mapping(table.get("cmd") or {}, "trackers.cmd", None).items():
        if not _NAME.fullmatch(str(name)):
            raise ValueError(f"trackers.cmd: {name!r} is not a name (letters, digits, - and _)")
        commands[str(name)] = _command(str(name), spec)
    settings: TrackerSettings = _section({"takeover": table["takeover"]} if "takeover" in table else {}, "trackers",
                        TrackerSettings, {"takeover": parse_duration})
    return replace(settings, github=github, backlog=backlog, commands=commands)


def _command(name: str, raw: object) -> CommandSettings:
    from aq.core.durations import parse_duration

    where = f"trackers.cmd.{name}"
    parsers: dict[str, Callable[[Any], Any]] = {
        "view": _argv, "query": _argv, "comment": _argv, "status": _argv,
        "fields": lambda v: _texts_by_key(v, FIELD_NAMES),
        "statuses": lambda v: _texts_by_key(v, (IN_PROGRESS, DONE)),
        "priorities": _priority_table,
        "closed": lambda v: tuple(text.lower() for text in _texts(v)),
        "secret_env": lambda v: tuple(_env_name(text) for text in _texts(v)),
        "label": _text, "timeout": parse_duration,
    }
    if not isinstance(raw, dict) or raw.get("view") is None:
        raise ValueError(f"{where}: needs 'view', the command printing one item as JSON "
                         "(e.g. 'glab issue view {id} --output json')")
    made: CommandSettings = _section({k: v for k, v in raw.items() if v is not None}, where,
                                     functools.partial(CommandSettings, name), parsers)
    return made


def _section(raw: object, where: str, kind: Any, parsers: Mapping[str, Any]) -> Any:
    table = _mapping(raw or {}, where, tuple(parsers))
    values = {}
    for key, value in table.items():
        try:
            values[key] = parsers[key](value)
        except ValueError as err:
            raise ValueError(f"{where}.{key}: {err}") from None
    return kind(**values)


def _texts_by_key(raw: object, known: Sequence[str]) -> dict[str, str]:
    table = _mapping(raw, "", known)
    return {key: _text(value) for key, value in table.items()}


def _priority_table(raw: object) -> dict[str, str]:
    from aq.core.manifest import PRIORITIES

    table = {str(k): _text(v) for k, v in _mapping(raw, "", None).items()}
    for theirs, ours in table.items():
        if ours not in PRIORITIES:
            raise ValueError(f"{theirs}: {ours!r} is not a priority of aq; expected one of "
                             f"{', '.join(PRIORITIES)}")
    return table


def _mapping(raw: object, where: str, known: Sequence[str] | None) -> dict[str, Any]:
    prefix = f"{where}: " if where else ""
    if not isinstance(raw, dict):
        raise ValueError(f"{prefix}expected a mapping")
    if known is not None:
        for key in raw:
            if key not in known:
                raise ValueError(f"{prefix}unknown key '{key}'; known: {', '.join(known)}")
    return {str(k): v for k, v in raw.items()}


def _text(value: object) -> str:
    if not isinstance(value, str | int | float) or isinstance(value, bool) or not str(value).strip():
        raise ValueError(f"{value!r} is not a text")
    return str(value).strip()


def _texts(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise ValueError(f"{value!r} is not a list")
    return [_text(v) for v in value]


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{value!r} is not true or false")
    return value


def _url(value: object) -> str:
    """An API root the token may be sent to: https (plain http only to this machine), and no
    credentials in the URL itself."""
    text = _text(value).rstrip("/")
    match = re.match(r"(https?)://([^/?#]*)", text)
    if not match:
        raise ValueError(f"{text!r} is not an http(s) URL")
    if "@" in match.group(2):
        raise ValueError("the URL holds credentials: take them out (the token comes from the "
                         "environment)")
    host = match.group(2).rpartition(":")[0] or match.group(2)
    if match.group(1) == "http" and host not in ("127.0.0.1", "localhost", "[::1]"):
        raise ValueError(f"{text!r} is plain http: use https, so the token is not sent in clear")
    return text


def _env_name(value: object) -> str:
    text = _text(value)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", text):
        raise ValueError(f"{text!r} is not an environment variable's name")
    return text


def _argv(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        try:
            parts = shlex.split(value)
        except ValueError as err:
            raise ValueError(f"{value!r} is not a command: {err}") from None
    elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        parts = list(value)
    else:
        raise ValueError(f"{value!r} is not a command (a string or a list of arguments)")
    if not parts:
        raise ValueError("the command is empty")
    return tuple(parts)


_PRIORITY_WORDS = {
    "critical": "critical", "blocker": "critical", "urgent": "critical", "highest": "critical",
    "p0": "critical", "high": "high", "p1": "high", "major": "high", "medium": "medium",
    "normal": "medium", "p2": "medium", "low": "low", "lowest": "low", "minor": "low",
    "trivial": "low", "p3": "low", "p4": "low",
}


def our_priority(word: object, table: Mapping[str, str] | None = None) -> str | None:
    """A tracker's priority in aq's words: its table first (aq.yaml), then common names."""
    if word is None or word == "":
        return None
    text = str(word).strip()
    if table:
        for theirs, ours in table.items():
            if theirs.lower() == text.lower():
                return ours
    return _PRIORITY_WORDS.get(text.lower())
