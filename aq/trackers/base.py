"""Trackers: where people plan (GitHub issues, a Backlog.md project, any tracker with a CLI).

An adapter reads an item (`fetch`), lists the items a query returns (`query`) and reports a
job's progress back to its item (`post`). This module holds what every adapter shares: the
item reference (`github:owner/repo#12`, `backlog:TASK-3`, `cmd:jira:PROJ-7`), the item as aq
sees it, a post and the error an adapter raises. The `trackers:` settings of aq.yaml are in
`aq.trackers.settings`, which the config loader reads on every command.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from aq.errors import AqError, UsageError
from aq.trackers.settings import COMMAND_NAME

KINDS = ("github", "backlog", "cmd")


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


# OWNER/REPO as GitHub allows them; never `.` or `..`, which would walk its API's paths
GITHUB_REPO = re.compile(r"(?!\.\.?/)[A-Za-z0-9_.-]+/(?!\.\.?(?:#|$))[A-Za-z0-9_.-]+")
_GITHUB = re.compile(rf"(?P<repo>{GITHUB_REPO.pattern})#(?P<number>[1-9][0-9]*)")
_BACKLOG = re.compile(r"[A-Za-z]+-[0-9]+(?:\.[0-9]+)*")
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
    if not sep or not COMMAND_NAME.fullmatch(name) or not item.strip() or any(c.isspace() for c in item):
        raise UsageError(f"{text!r} is not a command tracker item: expected cmd:NAME:ID, NAME "
                         "being an adapter under trackers.cmd in aq.yaml")
    if item.startswith("-"):  # the id is an argument of the adapter's commands, never an option
        raise UsageError(f"{text!r} is not an item id aq hands to a command: it starts with "
                         "'-', which the tracker's command would read as an option")
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
