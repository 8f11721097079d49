"""The queue's profiles: profiles/<name>.md parsed, through a stat-keyed cache."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, replace

from aq.core.profile import Profile, parse_profile
from aq.errors import AqError
from aq.infra.confine import entry_refusal, read_regular, refusal
from aq.infra.files import Signature, StatCache, signature
from aq.store.layout import CACHE_VERSION, PROFILES_DIR, Layout


@dataclass(frozen=True, slots=True)
class Profiles:
    """The queue's profiles and the files that could not be read as one."""

    found: dict[str, Profile]
    problems: tuple[str, ...] = ()


def read_profiles(layout: Layout) -> Profiles:
    """profiles/<name>.md parsed (README.md is not a profile), through a stat-keyed cache."""
    folder = layout.root / PROFILES_DIR
    refused = [line] if (line := refusal(layout.root, folder, folder=True)) else []
    entries: list[os.DirEntry[str]] = []
    if not refused:  # a linked folder is named, never entered
        with contextlib.suppress(FileNotFoundError, NotADirectoryError), os.scandir(folder) as listing:
            entries = list(listing)
    signatures: dict[str, Signature] = {}
    for entry in entries:
        stem = entry.name[:-3]
        if not entry.name.endswith(".md") or stem.lower() == "readme":
            continue
        if entry.is_file(follow_symlinks=False):
            signatures[stem] = signature(entry.stat(follow_symlinks=False))
        elif line := entry_refusal(f"{PROFILES_DIR}/{entry.name}", entry):
            refused.append(line)  # a link is named, never followed
    cache = StatCache(layout.state_dir / "profiles.pickle", CACHE_VERSION)
    loaded = cache.load(signatures)
    if not isinstance(loaded, Profiles):
        loaded = _parse(layout, sorted(signatures))
        cache.save(signatures, loaded)
    return replace(loaded, problems=(*refused, *loaded.problems)) if refused else loaded


def _parse(layout: Layout, names: list[str]) -> Profiles:
    found, problems = {}, []
    for name in names:
        source = f"{PROFILES_DIR}/{name}.md"
        try:
            text = read_regular(layout.root / source, source).decode("utf-8")
            found[name] = parse_profile(name, text, source)
        except (AqError, OSError, UnicodeDecodeError) as err:
            problems.append(str(err) if isinstance(err, AqError) else f"{source}: cannot read: {err}")
    return Profiles(found, tuple(problems))
