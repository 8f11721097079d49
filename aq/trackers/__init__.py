"""Trackers: where people plan (GitHub issues, a Backlog.md project, any tracker with a CLI).

The adapters (`github`, `backlog`, `command`) share `aq.trackers.base`; this module is the
registry that opens the one a reference names, importing only that adapter.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aq.errors import UsageError

if TYPE_CHECKING:  # aq.yaml's settings import this package: they need no adapter's types
    from aq.trackers.base import Tracker
    from aq.trackers.settings import TrackerSettings

# --- the registry --------------------------------------------------------------------------------

def open_tracker(settings: TrackerSettings, ref_kind: str, adapter: str, root: Any,
                 env: Mapping[str, str]) -> Tracker:
    """The adapter for a kind of reference, set up from aq.yaml and the environment."""
    if ref_kind == "github":
        from aq.trackers.github import GitHub

        return GitHub(settings.github, env)
    if ref_kind == "backlog":
        from aq.trackers.backlog import Backlog

        return Backlog(settings.backlog, root, env)
    spec = settings.commands.get(adapter)
    if spec is None:
        known = ", ".join(sorted(settings.commands)) or "none"
        raise UsageError(f"no command tracker {adapter!r} in aq.yaml (trackers.cmd has: {known}): "
                         "add one with at least a 'view' command")
    from aq.trackers.command import CommandTracker

    return CommandTracker(spec, root, env)
