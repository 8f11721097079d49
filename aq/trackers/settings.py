"""The `trackers:` settings of aq.yaml: how to reach GitHub, a Backlog.md project, and each
command tracker. Apart from what adapters share (`aq.trackers.base`): the config loader reads
these on every command, and nothing else of the trackers need load for that.
"""

from __future__ import annotations

import functools
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

# The two moves a tracker hears of, in aq's words; each tracker's own words are its `statuses`.
IN_PROGRESS = "in_progress"
DONE = "done"
# What a command tracker may be called: `cmd:NAME:ID` references and `trackers.cmd` keys.
COMMAND_NAME = re.compile(r"[A-Za-z0-9_-]+")

# --- settings ----------------------------------------------------------

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
        if not COMMAND_NAME.fullmatch(str(name)):
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
