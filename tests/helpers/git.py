"""git as the tests run it: with the tests' identity (`git`), or as a person or an agent would
with none of our GIT_ settings (`git_in`)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.helpers.cli import aq_env

IDENTITY = ("-c", "user.name=aq-test", "-c", "user.email=aq-test@example.com")


def git(root: Path, *args: str, check: bool = True, timeout: float = 60) -> str:
    """`git ARGS` in `root`: its stdout; a failure fails the test, saying the command."""
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                          env=aq_env(), timeout=timeout)
    if check:
        assert done.returncode == 0, f"git {' '.join(args)} in {root}: {done.stderr}"
    return done.stdout


def git_in(root: Path, *args: str) -> str:
    """Run git in `root` as an agent or a person would, with no GIT_* variable of ours leaking in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    done = subprocess.run(["git", *IDENTITY, *args], cwd=root, env=env, capture_output=True,
                          text=True, check=True)
    return done.stdout


def files_at(repo: Path, ref: str, *paths: str, check: bool = True) -> list[str]:
    """The path of every file in `ref`'s tree (under `paths`), as `git ls-tree -r` names them."""
    return git(repo, "ls-tree", "-r", "--name-only", ref, "--", *paths, check=check).splitlines()


def jobs_at(repo: Path, ref: str, check: bool = True) -> list[str]:
    """The ids of the job files (`<id>.md`) in `ref`'s tree, sorted: where its stage folders and
    archive parts hold them is left out."""
    return sorted(path.rsplit("/", 1)[-1][:-3] for path in files_at(repo, ref, check=check)
                  if path.endswith(".md"))


def head(root: Path) -> str:
    """The commit `root`'s HEAD names."""
    return git(root, "rev-parse", "HEAD").strip()


def project_repo(base: Path, name: str = "project") -> Path:
    """A bare project repo at base/<name>.git whose main branch has one commit (README.md)."""
    bare = base / f"{name}.git"
    git(base, "init", "-q", "--bare", "-b", "main", str(bare))
    seed = base / f"{name}-seed"
    git(base, "clone", "-q", str(bare), str(seed))
    (seed / "README.md").write_text("the project\n")
    git(seed, "add", "-A")
    git(seed, "commit", "-q", "-m", "start")
    git(seed, "push", "-q", "origin", "HEAD:main")
    return bare
