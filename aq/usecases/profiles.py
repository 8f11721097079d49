"""The queue's profiles (`profiles/*.md`): the list, and one by name."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aq.core.manifest import NAME
from aq.core.profile import Profile
from aq.errors import ProfileNotFound, UsageError
from aq.store.layout import PROFILES_DIR
from aq.store.queue import Queue


@dataclass(frozen=True, slots=True)
class ProfileListing:
    profiles: tuple[Profile, ...]
    problems: tuple[str, ...]  # files in profiles/ that cannot be read as a profile
    jobs: Mapping[str, int]  # profile name -> jobs naming it, in any stage


def list_profiles(queue: Queue) -> ProfileListing:
    loaded = queue.profiles()
    jobs: dict[str, int] = {}
    for job in queue.snapshot().jobs:
        if job.manifest and job.manifest.profile:
            jobs[job.manifest.profile] = jobs.get(job.manifest.profile, 0) + 1
    return ProfileListing(tuple(loaded.found[name] for name in sorted(loaded.found)),
                          loaded.problems, jobs)


def get_profile(queue: Queue, name: str) -> Profile:
    loaded = queue.profiles()
    if name in loaded.found:
        return loaded.found[name]
    broken = [problem for problem in loaded.problems if problem.startswith(f"{PROFILES_DIR}/{name}.md")]
    if broken:
        raise ProfileNotFound(broken[0])
    known = ", ".join(sorted(loaded.found)) or "none"
    if not NAME.fullmatch(name):  # a path, or a name no job can give
        raise UsageError(f"{name!r} is not a profile name (letters, digits, '.', '_', '-', "
                              f"the name of a file in {PROFILES_DIR}/ without .md; known: {known})")
    raise ProfileNotFound(f"no profile {name!r} in {PROFILES_DIR}/ (known: {known}); add "
                          f"{PROFILES_DIR}/{name}.md")
