"""store.origin: which remote and branch a queue syncs with, cached on the files git reads it
from, so a changed clone is never answered from an old cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from aq.errors import GitError
from aq.store.layout import Layout
from aq.store.origin import CACHE_NAME, Origin, find_origin
from tests.helpers.git import git_in


def origin(root: Path, configured: str | None = None) -> Origin | None:
    return find_origin(Layout.at(root), configured)


def branch(root: Path) -> str:
    return git_in(root, "symbolic-ref", "--short", "HEAD").strip()


def test_a_remote_added_or_a_branch_switched_after_a_first_look_is_seen(queue_root: Path,
                                                                         tmp_path: Path) -> None:
    assert origin(queue_root) is None  # a local queue
    assert (Layout.at(queue_root).state_dir / CACHE_NAME).is_file()  # the answer was kept
    git_in(queue_root, "remote", "add", "origin", str(tmp_path / "remote.git"))
    assert origin(queue_root) == Origin("origin", branch(queue_root))
    git_in(queue_root, "checkout", "-q", "-b", "fleet")
    assert origin(queue_root) == Origin("origin", "fleet")
    git_in(queue_root, "remote", "rename", "origin", "upstream")
    assert origin(queue_root) is None  # no origin, and aq.yaml names none
    assert origin(queue_root, "upstream") == Origin("upstream", "fleet")


def test_a_configured_remote_the_clone_lacks_says_how_to_add_it(queue_root: Path) -> None:
    with pytest.raises(GitError, match="git remote add upstream URL"):
        origin(queue_root, "upstream")


def test_a_remote_from_an_included_config_file_is_seen_when_that_file_changes(
        queue_root: Path, tmp_path: Path) -> None:
    included = tmp_path / "remotes.gitconfig"
    included.write_text("")
    git_in(queue_root, "config", "include.path", str(included))
    assert origin(queue_root) is None
    included.write_text(f'[remote "origin"]\n\turl = {tmp_path / "remote.git"}\n')
    assert origin(queue_root) == Origin("origin", branch(queue_root))  # asked git: not cached
