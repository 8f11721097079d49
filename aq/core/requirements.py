"""Capability requirements (DESIGN §2, §4): does a worker's capability set meet what a job needs?

A worker's capabilities are a frozenset of tags: `os:linux`, `arch:arm64`, `engine:claude`,
`has:docker`, `gpu`, any tag a person gave it, and one `<tool>=<version>` per probed version
(`node=20.11.1`, `python=3.11.4`). A requirement is either

- a plain tag, met when the worker has exactly that tag (`has:docker`, `gpu`, `region=eu`), or
- a version requirement `<tool><op><version>` with op one of >=, <=, >, <, ==, !=, possibly a
  comma-joined conjunction (`node>=20,<23`), met when some `<tool>=<v>` the worker has satisfies
  every condition. Versions compare part by part, the shorter padded with zeros (20 == 20.0.0).

A malformed requirement is never met; `check_requirement` says what is wrong with it (for lint).
Pure: no I/O.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable

from aq.errors import UsageError

Version = tuple[int, ...]

# Tools whose probed version a worker reports as `<tool>=<version>` (see aq.infra.probe).
VERSIONED_TOOLS = ("node", "npm", "python", "python3", "git", "go", "docker", "gh", "cargo", "xcode")

_OPERATORS: dict[str, Callable[[int, int], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt,
    "==": operator.eq, "!=": operator.ne,
}
_OPERATOR_LIST = ">=, <=, >, <, == or !="
_LEADING_VERSION = re.compile(r"\s*[vV]?(\d+(?:\.\d+)*)")
_STRICT_VERSION = re.compile(r"[vV]?\d+(?:\.\d+)*")
_VERSION_IN_TEXT = re.compile(r"(?<![\d.])\d+(?:\.\d+)+")
_CLAUSE = re.compile(r"\s*(?P<tool>[^\s<>=!]*)\s*(?P<op>[<>=!]*)\s*(?P<version>.*?)\s*")
_TOOL = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")
_VERSION_EXAMPLES = "numbers such as 20, 3.11 or 2.39.2"

Condition = tuple[str, Version]


def parse_version(text: str) -> Version | None:
    """The leading numeric parts of a version: `v20.11.1` -> (20, 11, 1), `1.2.3-rc1` -> (1, 2, 3).

    None when the text does not start with a number (after an optional `v`).
    """
    match = _LEADING_VERSION.match(text)
    return tuple(int(part) for part in match.group(1).split(".")) if match else None


def version_in(output: str) -> str | None:
    """The first dotted version in a tool's `--version` output (`git version 2.39.2` -> `2.39.2`)."""
    match = _VERSION_IN_TEXT.search(output)
    return match.group(0) if match else None


def compare_versions(a: Version, b: Version) -> int:
    """-1, 0 or 1 as `a` is older than, the same as, or newer than `b`; missing parts count as 0."""
    width = max(len(a), len(b))
    left, right = a + (0,) * (width - len(a)), b + (0,) * (width - len(b))
    return (left > right) - (left < right)


def is_version_requirement(req: str) -> bool:
    """True when `req` compares a version (holds <, > , == or !=); otherwise it is a plain tag."""
    return "<" in req or ">" in req or "==" in req or "!=" in req


def requirement_met(req: str, have: frozenset[str]) -> bool:
    """Whether a worker with capabilities `have` meets `req`; a malformed requirement never is."""
    if not is_version_requirement(req):
        return req.strip() in have
    try:
        tool, conditions = _parse_version_requirement(req)
    except ValueError:
        return False
    return any(_satisfies(version, conditions) for version in versions_of(tool, have))


def missing(required: Iterable[str], have: frozenset[str]) -> list[str]:
    """The requirements in `required` that `have` does not meet, in their order."""
    return [req for req in required if not requirement_met(req, have)]


def tools_compared(required: Iterable[str]) -> frozenset[str]:
    """The tools whose versions the well-formed requirements in `required` compare."""
    tools = set()
    for req in required:
        if is_version_requirement(req):
            try:
                tools.add(_parse_version_requirement(req)[0])
            except ValueError:
                continue
    return frozenset(tools)


def versions_of(tool: str, have: frozenset[str]) -> list[Version]:
    """Every version of `tool` in a capability set (from its `<tool>=<version>` tags)."""
    prefix = tool + "="
    found = (parse_version(cap[len(prefix):]) for cap in have if cap.startswith(prefix))
    return [version for version in found if version is not None]


def check_requirement(req: str) -> str | None:
    """What is wrong with a requirement, in one line naming it (`malformed_requirement`, or
    advice: node=20 matches only a worker tagged exactly so); None when it is well formed."""
    if (malformed := malformed_requirement(req)) or is_version_requirement(req):
        return malformed
    problem = None
    if "=" in req:
        tool, _, value = req.strip().partition("=")
        version = parse_version(value) if _STRICT_VERSION.fullmatch(value) else None
        if tool in VERSIONED_TOOLS and version is not None:
            after = ".".join(map(str, (*version[:-1], version[-1] + 1)))
            problem = (f"workers report {tool}'s full version (such as {tool}=20.11.1), so only "
                       f"a worker tagged exactly {req.strip()} has it; for any {value}.x write "
                       f"{tool}>={value},<{after}")
    return f"capability {req!r}: {problem}" if problem else None


def malformed_requirement(req: str) -> str | None:
    """Why no worker could ever meet `req` (a space, a malformed version condition), in one
    line naming it; None when some worker could."""
    if is_version_requirement(req):
        try:
            _parse_version_requirement(req)
        except ValueError as err:
            return f"capability {req!r}: {err}"
        return None
    problem = _plain_problem(req.strip())
    return f"capability {req!r}: {problem}" if problem else None


def check_tag(tag: str) -> str | None:
    """What is wrong with a tag a worker declares (`--cap`, worker.yaml); None when it is fine."""
    if is_version_requirement(tag):
        return (f"capability {tag!r} is a requirement, not a tag; a worker declares a version "
                f"as tool=version (such as node=20.11.1)")
    problem = _plain_problem(tag.strip())
    return f"capability {tag!r}: {problem}" if problem else None


def cli_tags(tags: Iterable[str]) -> list[str]:
    """`--cap` tags; an empty one (an unset shell variable) is skipped, a malformed one refused
    in one line (exit 2)."""
    kept = []
    for tag in tags:
        if not tag.strip():
            continue
        problem = check_tag(tag)
        if problem:
            raise UsageError(f"--cap: {problem}")
        kept.append(tag.strip())
    return kept


def _plain_problem(tag: str) -> str | None:
    if not tag:
        return "empty; expected a tag such as has:docker or gpu"
    if any(char.isspace() for char in tag):
        return "holds a space; a capability is one word such as has:docker"
    if "," in tag:
        return "holds ','; list each capability separately"
    if tag.startswith("!"):
        return "a capability cannot be negated; list only what the job needs"
    return None


def _parse_version_requirement(req: str) -> tuple[str, tuple[Condition, ...]]:
    """The tool and conditions of `tool>=1,<2`; ValueError says what is wrong."""
    tool = ""
    conditions: list[Condition] = []
    for index, clause in enumerate(req.split(",")):
        match = _CLAUSE.fullmatch(clause)
        assert match is not None  # every part of the pattern may be empty
        name, op, text = match["tool"], match["op"], match["version"]
        if not (name or op or text):
            raise ValueError("has an empty condition; join conditions as in node>=20,<23")
        if index == 0:
            if not name:
                raise ValueError("names no tool; write it as in node>=20")
            if not _TOOL.fullmatch(name):
                raise ValueError(f"{name!r} is not a tool name; write it as in node>=20")
            tool = name
        if op not in _OPERATORS:
            shown = f"{op!r} is not a comparison" if op else "a condition has no comparison"
            raise ValueError(f"{shown}; use {_OPERATOR_LIST}")
        if index > 0 and name and name != tool:
            raise ValueError(f"compares {name} after {tool}; list each tool's requirement separately")
        if not _STRICT_VERSION.fullmatch(text):
            shown = f"{text!r} is not a version" if text else "a condition has no version"
            raise ValueError(f"{shown}; expected {_VERSION_EXAMPLES}")
        version = parse_version(text)
        assert version is not None  # it matched the strict pattern
        conditions.append((op, version))
    return tool, tuple(conditions)


def _satisfies(version: Version, conditions: Iterable[Condition]) -> bool:
    return all(_OPERATORS[op](compare_versions(version, bound), 0) for op, bound in conditions)
