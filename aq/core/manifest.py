"""The job manifest: YAML frontmatter + a Markdown body, validated into a frozen `Manifest`.

The manifest is immutable once added; everything that changes about a job is an event.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from aq.core.durations import parse_duration, parse_money, parse_positive_duration, parse_size
from aq.core.ids import is_job_id
from aq.core.requirements import malformed_requirement
from aq.errors import ManifestError

PRIORITIES = ("critical", "high", "medium", "low")
PRIORITY_RANK = {name: rank for rank, name in enumerate(PRIORITIES)}
REVIEW_POLICIES = ("auto", "manual")
RETRY_ON = ("timeout", "verify_failed", "engine_failed", "engine_missing")
DEFAULT_RETRY_ON = ("timeout", "verify_failed", "engine_failed")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# A job file's most: 1 MiB is some 250k tokens, more than most agents take as a prompt. Over it,
# a file is refused unread, so a log pasted by mistake cannot exhaust every reader's memory.
MAX_JOB_BYTES = 1 << 20


def too_big(source: str, size: int | None) -> ManifestError:
    """A job of `size` bytes (None: more than read) refused."""
    said = "more than" if size is None else f"{size:,} bytes, over"
    return ManifestError(source, f"{said} the 1 MiB ({MAX_JOB_BYTES:,} bytes) a job file may be: "
                         "put the material in a file of the repository and name it in the body")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """`None` fields inherit from aq.yaml's `retry:` defaults."""

    max: int | None = None
    backoff: float | None = None
    on: tuple[str, ...] | None = None
    escalate: tuple[str, ...] = ()  # engines: attempt k after k-1 retries runs the k-th (the last on)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), tuple(getattr(self, name) for name in _FIELD_NAMES[type(self)]))


@dataclass(frozen=True, slots=True)
class Budget:
    wall: float | None = None
    usd: float | None = None
    tokens: int | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), tuple(getattr(self, name) for name in _FIELD_NAMES[type(self)]))


@dataclass(frozen=True, slots=True)
class ReviewGate:
    """`review:`: after its verify passes, an agent reviews the job's work before it moves on."""

    profile: str | None = None  # the reviewer's persona
    engine: str | None = None  # the reviewer's engine (default: the profile's, else the queue's)
    max_rounds: int = 2  # reviews that may ask for changes before the job is dead-lettered

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), tuple(getattr(self, name) for name in _FIELD_NAMES[type(self)]))


@dataclass(frozen=True, slots=True)
class Manifest:
    id: str
    title: str
    body: str
    keys: tuple[str, ...] = ()  # the frontmatter keys the file set, in file order
    engine: str | None = None
    cwd: str | None = None
    yolo: bool = False
    lock: str | None = None
    timeout: float | None = None
    verify: str | None = None
    profile: str | None = None
    engine_class: str | None = None
    capabilities: tuple[str, ...] = ()
    prefers: tuple[str, ...] = ()
    priority: str = "medium"
    budget: Budget | None = None
    deps: tuple[str, ...] = ()
    idempotency_key: str | None = None
    retry: RetryPolicy | None = None
    review_policy: str | None = None
    artifacts: tuple[str, ...] = ()
    tracker_item: str | None = None
    allowed_scope: tuple[str, ...] | None = None  # globs under cwd the job may change
    repo: str | None = None  # the project the job works on: a worktree of it per attempt
    base: str | None = None  # the branch the job's branch starts from (default: the repo's)
    retry_from: str | None = None  # branch (default): a retry goes on from the job's branch
    ship: str | None = None  # what `aq ship` does: mark (default), merge, pr
    parent: str | None = None  # the job this one is a child of (aq spawn, aq add --parent)
    children: tuple[str, ...] = ()  # children added with it: each a body, or a .md file's path
    review: ReviewGate | None = None  # an agent reviews its work once its verify passed
    samples: int = 1  # best of N: N independent attempts (sample jobs); the first to pass wins
    engines: tuple[str, ...] = ()  # the samples' engines, taken in turn (default: the job's)
    mcp: bool = False  # its engine gets aq's MCP server (aq mcp) in its MCP configuration
    content_hash: str = field(default="", compare=False)

    @property
    def priority_rank(self) -> int:
        return PRIORITY_RANK[self.priority]

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), tuple(getattr(self, name) for name in _FIELD_NAMES[type(self)]))


# The manifest cache pickles thousands of these: rebuilding each from its fields in order is
# several times faster than the field-by-field __setstate__ dataclasses give slots classes.
_FIELD_NAMES: dict[type, tuple[str, ...]] = {
    cls: tuple(f.name for f in fields(cls)) for cls in (RetryPolicy, Budget, ReviewGate, Manifest)
}


# --- value checkers: each returns the normalized value or raises ValueError(expected) ---


def _text(value: object) -> str:
    if isinstance(value, bool) or value is None or isinstance(value, list | dict):
        raise ValueError(f"{value!r} is not text")
    text = str(value).strip()
    if not text:
        raise ValueError("is empty")
    if "\0" in text:  # a YAML "\0": no command, file name or line can hold one
        raise ValueError("holds a NUL byte")
    return text


def _one_line(value: object) -> str:
    text = _text(value)
    if "\n" in text:
        raise ValueError("must be one line")
    return text


def _name(value: object) -> str:
    text = _one_line(value)
    if not NAME.fullmatch(text):
        raise ValueError(f"{text!r} is not a name (letters, digits, '.', '_', '-')")
    return text


def _bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(f"{value!r} is not true or false")


def _str_list(value: object) -> tuple[str, ...]:
    """A YAML list of strings, or one string with items separated by commas."""
    if isinstance(value, str):
        items: list[object] = [part for part in value.split(",") if part.strip()]
    elif isinstance(value, list):
        items = value
    else:
        raise ValueError(f"{value!r} is not a list")
    return tuple(_one_line(item) for item in items)


def _capabilities(value: object) -> tuple[str, ...]:
    """Requirements a worker must have, each one some worker could meet (not `a b`)."""
    names = _str_list(value)
    for name in names:
        if problem := malformed_requirement(name):
            raise ValueError(problem)
    return names


def _priority(value: object) -> str:
    text = _one_line(value).lower()
    if text not in PRIORITY_RANK:
        raise ValueError(f"{value!r} is not a priority; expected one of {', '.join(PRIORITIES)}"
                         + _suggest(text, PRIORITIES))
    return text


def _choice(value: object, allowed: Sequence[str], what: str) -> str:
    """One of `allowed` (case aside), or ValueError naming `what` and the choices."""
    text = _one_line(value).lower()
    if text not in allowed:
        choices = ", ".join(allowed[:-1]) + f" or {allowed[-1]}"
        raise ValueError(f"{value!r} is not {what}; expected {choices}")
    return text


def _review_policy(value: object) -> str:
    return _choice(value, REVIEW_POLICIES, "a review policy")


SHIP_MODES = ("mark", "merge", "pr")
RETRY_FROM = ("branch", "base", "session")  # session: the agent resumes its session too


def _ship(value: object) -> str:
    return _choice(value, SHIP_MODES, "a ship mode")


def _retry_from(value: object) -> str:
    return _choice(value, RETRY_FROM, "where a retry starts")


def _artifacts(value: object) -> tuple[str, ...]:
    globs = _str_list(value)
    for glob in globs:
        if glob.startswith(("/", "~")) or ".." in glob.split("/"):
            raise ValueError(f"{glob!r} leaves cwd; artifacts are globs under cwd such as dist/*.whl")
    return globs


def _retry(value: object) -> RetryPolicy:
    if isinstance(value, int) and not isinstance(value, bool):
        return RetryPolicy(max=_count(value))
    if not isinstance(value, dict):
        raise ValueError(f"{value!r} is not a retry policy such as {{max: 2, backoff: 5m, on: [timeout]}}")
    fields = {str(key): item for key, item in value.items()}
    _reject_unknown(fields, ("max", "backoff", "on", "escalate"), "retry.")
    on = None
    if "on" in fields:
        on = _str_list(fields["on"])
        for outcome in on:
            if outcome not in RETRY_ON:
                raise ValueError(f"retry.on: {outcome!r} is not an outcome; expected some of "
                                 f"{', '.join(RETRY_ON)}" + _suggest(outcome, RETRY_ON))
    escalate: tuple[str, ...] = ()
    if "escalate" in fields:
        escalate = tuple(_name(engine) for engine in _str_list(fields["escalate"]))
        if not escalate:
            raise ValueError("retry.escalate names no engine: list them, cheapest first")
    # a ladder is climbed one retry a step: unless said otherwise, as many retries as steps
    most = _count(fields["max"]) if "max" in fields else (len(escalate) - 1 or None
                                                          if escalate else None)
    return RetryPolicy(
        max=most,
        backoff=parse_duration(fields["backoff"]) if "backoff" in fields else None,
        on=on,
        escalate=escalate,
    )


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{value!r} is not a whole number of 0 or more")
    return value


def _budget(value: object) -> Budget:
    if not isinstance(value, dict):
        raise ValueError(f"{value!r} is not a budget such as {{wall: 4h, usd: 5, tokens: 2M}}")
    fields = {str(key): item for key, item in value.items()}
    _reject_unknown(fields, ("wall", "usd", "tokens"), "budget.")
    return Budget(
        wall=parse_positive_duration(fields["wall"]) if "wall" in fields else None,
        usd=parse_money(fields["usd"]) if "usd" in fields else None,
        tokens=parse_size(fields["tokens"]) if "tokens" in fields else None,
    )


def _deps(value: object) -> tuple[str, ...]:
    deps = _str_list(value)
    for dep in deps:
        if not is_job_id(dep):
            raise ValueError(f"{dep!r} is not a job id")
    return tuple(dict.fromkeys(deps))


def _job_id(value: object) -> str:
    if not isinstance(value, str) or not is_job_id(value):
        raise ValueError(f"{value!r} is not a job id")
    return value


def review_gate(value: object) -> ReviewGate:
    """`review: {profile: reviewer, engine: codex, max_rounds: 2}` (also on a profile and in
    aq.yaml)."""
    if not isinstance(value, dict):
        raise ValueError(f"{value!r} is not a review gate such as "
                         "{profile: reviewer, engine: codex, max_rounds: 2}")
    fields = {str(key): item for key, item in value.items()}
    _reject_unknown(fields, ("profile", "engine", "max_rounds"), "review.")
    most = _count(fields.get("max_rounds", 2))
    if most < 1:
        raise ValueError("review.max_rounds must be 1 or more")
    return ReviewGate(profile=_name(fields["profile"]) if fields.get("profile") else None,
                      engine=_name(fields["engine"]) if fields.get("engine") else None,
                      max_rounds=most)


MAX_SAMPLES = 10


def _samples(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SAMPLES:
        raise ValueError(f"{value!r} is not a number of samples from 1 to {MAX_SAMPLES}")
    return value


def _engines(value: object) -> tuple[str, ...]:
    engines = tuple(_name(engine) for engine in _str_list(value))
    if not engines:
        raise ValueError("names no engine: list the engines the samples take in turn")
    return engines


def _children(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError("expected a list of job bodies or .md file paths")
    children = []
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise ValueError("each child is a job body (text) or the path of a .md file")
        children.append(item)
    return tuple(children)


_CHECKERS: dict[str, tuple[str, Callable[[object], Any]]] = {
    # manifest key: (Manifest field, checker)
    "title": ("title", _one_line),
    "engine": ("engine", _name),
    "cwd": ("cwd", _one_line),
    "yolo": ("yolo", _bool),
    "lock": ("lock", _one_line),
    "timeout": ("timeout", parse_positive_duration),
    "verify": ("verify", _text),
    "profile": ("profile", _name),
    "engine-class": ("engine_class", _name),
    "capabilities": ("capabilities", _capabilities),
    "prefers": ("prefers", _str_list),
    "priority": ("priority", _priority),
    "budget": ("budget", _budget),
    "deps": ("deps", _deps),
    "idempotency-key": ("idempotency_key", _one_line),
    "retry": ("retry", _retry),
    "review-policy": ("review_policy", _review_policy),
    "artifacts": ("artifacts", _artifacts),
    "tracker-item": ("tracker_item", _one_line),
    "allowed-scope": ("allowed_scope", _str_list),
    "repo": ("repo", _one_line),
    "base": ("base", _one_line),
    "retry-from": ("retry_from", _retry_from),
    "ship": ("ship", _ship),
    "parent": ("parent", _job_id),
    "children": ("children", _children),
    "review": ("review", review_gate),
    "samples": ("samples", _samples),
    "engines": ("engines", _engines),
    "mcp": ("mcp", _bool),
}
KNOWN_KEYS = tuple(_CHECKERS)


def _suggest(word: str, choices: tuple[str, ...] | list[str]) -> str:
    import difflib  # lazily, like hashlib below: a warm `aq ls` reads manifests from its cache

    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _reject_unknown(fields: Mapping[str, object], known: tuple[str, ...], prefix: str) -> None:
    for key in fields:
        if key not in known:
            raise ValueError(f"unknown key '{prefix}{key}'{_suggest(key, known)}; "
                             f"known: {', '.join(known)}")


def default_title(body: str) -> str:
    """The first Markdown heading of the body, else its first non-empty line."""
    lines = [line.strip() for line in body.splitlines() if line.strip()]
    for line in lines:
        if line.startswith("#"):
            return line.lstrip("#").strip()[:200] or "untitled"
    return lines[0][:200] if lines else "untitled"


_OPENING = re.compile(r"---[ \t]*\r?\n")
_FENCE = re.compile(r"\A---[ \t]*\r?\n(.*?)^(?:---|\.\.\.)[ \t]*(?:\r?\n|\Z)", re.S | re.M)


def split_frontmatter(text: str, source: str) -> tuple[dict[Any, Any], str]:
    """Parse `---`-fenced YAML frontmatter; a file without an opening fence is all body."""
    text = text.lstrip("\ufeff")
    if not _OPENING.match(text):
        return {}, text.strip()
    match = _FENCE.match(text)
    if match is None:
        raise ManifestError(source, "the frontmatter opened with '---' is never closed: end it with a line '---'")
    import yaml  # lazily: only a cache miss pays for the YAML parser

    from aq.core.yamltext import load_yaml

    try:
        metadata = load_yaml(match.group(1))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 2}" if mark is not None else ""
        problem = getattr(err, "problem", None) or "unreadable"
        raise ManifestError(source, f"frontmatter is not valid YAML{where}: {problem}") from None
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        what = {"list": "a list", "str": "text", "int": "a number", "float": "a number",
                "bool": "true or false"}
        raise ManifestError(source, f"frontmatter is {what.get(type(metadata).__name__, 'a value')}, "
                            "not a mapping of keys such as 'priority: high'")
    return metadata, text[match.end():].strip()


def check_fields(metadata: Mapping[Any, object], checkers: Mapping[str, tuple[str, Any]],
                 source: str, unknown: Callable[[str], str]) -> tuple[dict[str, Any], list[str]]:
    """Each frontmatter key through its checker: the field values, and the keys set (in file
    order). A key with no value means unset. An unknown key or a bad value raises
    ManifestError naming the file and the key (`unknown` says what an unknown key is)."""
    values: dict[str, Any] = {}
    keys: list[str] = []
    for raw_key, raw_value in metadata.items():
        key = str(raw_key)
        if key not in checkers:
            raise ManifestError(source, unknown(key), key)
        if raw_value is None:  # `lock:` with nothing after it means unset
            continue
        field_name, checker = checkers[key]
        try:
            values[field_name] = checker(raw_value)
        except ValueError as err:
            raise ManifestError(source, str(err), key) from None
        keys.append(key)
    return values, keys


def parse_manifest(job_id: str, text: str, source: str) -> Manifest:
    """Validate a manifest's text into a `Manifest`, or raise ManifestError naming file and key."""
    if "\0" in text:
        raise ManifestError(source, "looks binary (it holds NUL bytes): a job is a Markdown text file")
    if len(text) > MAX_JOB_BYTES // 4 and (size := len(text.encode())) > MAX_JOB_BYTES:
        raise too_big(source, size)
    metadata, body = split_frontmatter(text, source)
    if not body.strip():
        raise ManifestError(source, "the body is empty: write what the job should do below the frontmatter")
    values, keys = check_fields(metadata, _CHECKERS, source, lambda key: (
        f"unknown key{_suggest(key, KNOWN_KEYS)}; known keys: {', '.join(KNOWN_KEYS)}"))
    if job_id in values.get("deps", ()):
        raise ManifestError(source, f"the job depends on itself ({job_id!r})", "deps")
    if values.get("parent") == job_id:
        raise ManifestError(source, f"the job is its own parent ({job_id!r})", "parent")
    if values.get("parent") in values.get("deps", ()):
        raise ManifestError(source, f"the job depends on its parent {values['parent']!r}, which "
                            "waits for it: they would wait for each other forever", "deps")
    if "engines" in values:  # engines alone: one sample on each
        values.setdefault("samples", len(values["engines"]))
    if values.get("samples", 1) > 1 and values.get("children"):
        raise ManifestError(source, "a job with samples: declares no children: each sample "
                            "is a child of it", "children")
    values.setdefault("title", default_title(body))
    return Manifest(
        id=job_id,
        body=body,
        keys=tuple(keys),
        content_hash=digest(text)[:16],
        **values,
    )


def render_manifest(fields: Mapping[str, object], body: str, source: str = "the new job") -> str:
    """The file text for a new job: YAML frontmatter (only the keys given) and the body."""
    import yaml

    for key in fields:
        if key not in _CHECKERS:
            raise ManifestError(source, f"unknown key{_suggest(str(key), KNOWN_KEYS)}; "
                                f"known keys: {', '.join(KNOWN_KEYS)}", str(key))
    if not fields:
        if _OPENING.match(body.lstrip("\ufeff")):  # a body opening with a '---' rule needs a fence
            return f"---\n---\n\n{body.strip()}\n"
        return body.rstrip("\n") + "\n"
    head = yaml.safe_dump(dict(fields), sort_keys=False, allow_unicode=True, default_flow_style=False)
    return f"---\n{head}---\n\n{body.strip()}\n"


def content_key(manifest: Manifest) -> str:
    """What makes two adds 'the same': every key and the body, not the id."""
    parts = [repr(getattr(manifest, name)) for name in manifest.__slots__
             if name not in ("id", "content_hash", "keys")]
    return digest("\n".join(parts))


def digest(text: str) -> str:
    """The sha256 of `text`, in hex: a job's or profile's content hash, an add's content key."""
    import hashlib  # lazily: OpenSSL's start-up is a few ms, and a warm `aq ls` hashes nothing

    return hashlib.sha256(text.encode()).hexdigest()
