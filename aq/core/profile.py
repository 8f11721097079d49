"""Profiles (DESIGN §1, §2): a role's persona and the defaults its jobs take.

`profiles/<name>.md` is frontmatter (the keys below) and a body, the persona, which goes before
the job's body in the prompt. A job's unset keys come from its profile; `apply_profile` gives
the manifest a worker runs, and `setting_sources` says where each value came from. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from aq.core.durations import parse_positive_duration
from aq.core.manifest import (
    Manifest,
    ReviewGate,
    _bool,
    _name,
    _one_line,
    _review_policy,
    _ship,
    _str_list,
    _suggest,
    _text,
    check_fields,
    digest,
    review_gate,
    split_frontmatter,
)
from aq.errors import ManifestError


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    persona: str
    version: str = "1"
    capabilities: tuple[str, ...] = ()
    verify: str | None = None  # default-verify; "" in the file means none
    engine: str | None = None
    engine_class: str | None = None
    prefers_engine: tuple[str, ...] = ()
    allowed_scope: tuple[str, ...] | None = None
    review_policy: str | None = None
    timeout: float | None = None
    allow_yolo: bool = False
    repo: str | None = None
    base: str | None = None
    ship: str | None = None
    review: ReviewGate | None = None
    content_hash: str = ""  # of the whole file: the claim event records it

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), tuple(getattr(self, f.name) for f in fields(self)))


def _verify(value: object) -> str | None:
    """default-verify: a shell command; "" means the profile sets none."""
    if isinstance(value, str) and not value.strip():
        return None
    return _text(value)


def _version(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{value!r} is not a version such as 1 or 2.1")
    return str(value).strip() or "1"


_VERSION_LINE = re.compile(r"^version:[ \t]*([^\s#]+)", re.M)

_CHECKERS: dict[str, tuple[str, Any]] = {
    # profile key: (Profile field, checker)
    "name": ("name", _name),
    "version": ("version", _version),
    "capabilities": ("capabilities", _str_list),
    "default-verify": ("verify", _verify),
    "engine": ("engine", _name),
    "engine-class": ("engine_class", _name),
    "prefers-engine": ("prefers_engine", _str_list),
    "allowed-scope": ("allowed_scope", _str_list),
    "review-policy": ("review_policy", _review_policy),
    "timeout": ("timeout", parse_positive_duration),
    "allow-yolo": ("allow_yolo", _bool),
    "repo": ("repo", _one_line),
    "base": ("base", _one_line),
    "ship": ("ship", _ship),
    "review": ("review", review_gate),
}
PROFILE_KEYS = tuple(_CHECKERS)


def parse_profile(name: str, text: str, source: str) -> Profile:
    """Validate `profiles/<name>.md` into a Profile, or raise ManifestError naming file and key."""
    metadata, body = split_frontmatter(text, source)
    values, _keys = check_fields(metadata, _CHECKERS, source, lambda key: (
        "unknown profile key" + (" (did you mean 'default-verify'?)" if key == "verify"
                                 else _suggest(key, PROFILE_KEYS))
        + f"; known keys: {', '.join(PROFILE_KEYS)}"))
    if isinstance(metadata.get("version"), float):  # YAML reads 1.10 as 1.1: keep it as written
        written = _VERSION_LINE.search(text)
        if written:
            values["version"] = written.group(1).strip("'\"")
    if values.setdefault("name", name) != name:
        raise ManifestError(source, f"names itself {values['name']!r} but the file is {name}.md: "
                            "make them the same", "name")
    return Profile(persona=body, content_hash=digest(text)[:16],
                   **values)


# Keys a job may leave to its profile: (job key, Manifest field, Profile field).
INHERITED = (
    ("verify", "verify", "verify"),
    ("allowed-scope", "allowed_scope", "allowed_scope"),
    ("review-policy", "review_policy", "review_policy"),
    ("timeout", "timeout", "timeout"),
    ("repo", "repo", "repo"),
    ("base", "base", "base"),
    ("ship", "ship", "ship"),
    ("review", "review", "review"),
)


def apply_profile(manifest: Manifest, profile: Profile | None) -> Manifest:
    """The manifest a worker runs: keys the job leaves unset come from its profile, and the
    capabilities are the job's plus the profile's. A job's own `engine` or `engine-class`
    beats both of the profile's."""
    if profile is None:
        return manifest
    updates: dict[str, Any] = {}
    for key, field_name, profile_field in INHERITED:
        value = getattr(profile, profile_field)
        if key not in manifest.keys and value is not None:
            updates[field_name] = value
    if "engine" not in manifest.keys and "engine-class" not in manifest.keys:
        updates["engine"], updates["engine_class"] = profile.engine, profile.engine_class
    if profile.capabilities:
        updates["capabilities"] = tuple(dict.fromkeys((*manifest.capabilities, *profile.capabilities)))
    return replace(manifest, **updates)


def setting_sources(manifest: Manifest, profile: Profile | None) -> dict[str, str]:
    """For each key a profile can set: "job", "profile <name>", or "queue default"."""
    sources = {}
    for key, _field, profile_field in (*INHERITED, ("engine", "engine", "engine"),
                                       ("engine-class", "engine_class", "engine_class")):
        if key in manifest.keys:
            sources[key] = "job"
        elif profile is not None and getattr(profile, profile_field) is not None and not (
                key.startswith("engine") and ({"engine", "engine-class"} & set(manifest.keys))):
            sources[key] = f"profile {profile.name}"
        else:
            sources[key] = "queue default"
    if profile is not None and profile.capabilities:
        sources["capabilities"] = "job + profile" if manifest.capabilities else f"profile {profile.name}"
    else:
        sources["capabilities"] = "job" if "capabilities" in manifest.keys else "queue default"
    return sources


def profile_problem(manifest: Manifest, profiles: Mapping[str, Profile]) -> str | None:
    """Why a job cannot run as its profile stands (missing profile, yolo not allowed), or None."""
    if manifest.profile is None:
        return None
    profile = profiles.get(manifest.profile)
    if profile is None:
        return (f"profile {manifest.profile!r} does not exist: add profiles/{manifest.profile}.md "
                "or fix the job's 'profile:'")
    if manifest.yolo and not profile.allow_yolo:
        return (f"yolo is not allowed by profile {profile.name!r}: remove 'yolo: true' or set "
                "'allow-yolo: true' in the profile")
    return None


def choose_engine(engine_class: str, preferred: Sequence[str], have: frozenset[str] | None
                  ) -> str | None:
    """The first engine of `preferred` this worker has (`engine:<name>`); with `have` unknown,
    the first one. None when the worker has none of them."""
    if have is None:
        return preferred[0] if preferred else None
    return next((engine for engine in preferred if f"engine:{engine}" in have), None)
