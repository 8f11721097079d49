"""The secret scanner: every place in a repository, clone or bare, where a secret's value lands."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Collection, Iterable, Iterator, Mapping
from pathlib import Path

from tests.helpers.cli import aq_env


def needles(secrets: Iterable[str]) -> dict[bytes, str]:
    """Byte strings whose presence means a secret leaked -> the secret they come from.

    A secret as it is; as JSON escapes it (events are JSON lines); and, for a multi-line value,
    each of its lines of MIN_SECRET_LENGTH or more (logs are written, and scrubbed, line by line).
    """
    found: dict[bytes, str] = {}
    for secret in secrets:
        forms = {secret, json.dumps(secret)[1:-1]}
        for line in secret.splitlines():
            if len(line.strip()) >= MIN_SECRET_LENGTH:
                forms |= {line.strip(), json.dumps(line.strip())[1:-1]}
        for form in forms:
            found[form.encode()] = secret
    return found


def _git(repo: Path, *args: str, input: bytes | None = None) -> bytes:
    done = subprocess.run(["git", *args], cwd=repo, input=input, capture_output=True,
                          env=aq_env(), timeout=120)
    assert done.returncode == 0, f"git {' '.join(args)} in {repo}: {done.stderr.decode()}"
    return done.stdout


def _git_dir(repo: Path) -> Path:
    return Path(_git(repo, "rev-parse", "--absolute-git-dir").decode().strip())


def _cat_objects(repo: Path, shas: Iterable[str]) -> Iterator[tuple[str, bytes]]:
    """(sha, content) of each object, via one `git cat-file --batch`."""
    wanted = list(dict.fromkeys(shas))
    if not wanted:
        return
    out = _git(repo, "cat-file", "--batch", input="".join(f"{sha}\n" for sha in wanted).encode())
    pos = 0
    for sha in wanted:
        end = out.index(b"\n", pos)
        header = out[pos:end].split()
        assert header[0].decode() == sha and header[1] != b"missing", header
        size = int(header[2])
        yield sha, out[end + 1:end + 1 + size]
        pos = end + 1 + size + 1  # the content is followed by a newline


def scan(repo: Path, secrets: Iterable[str], *, extra: Mapping[str, str | bytes] | None = None
         ) -> list[tuple[str, str]]:
    """Every place in `repo` (a clone or a bare repo) where a secret lands: (place, secret).

    Places: each work-tree file (its content and its path), each file of the git dir outside the
    object store (the aq state folder under .git/aq with running attempts' logs, prompts and
    failure files; reflogs; refs; the index; config), each git object reachable from any ref or
    reflog (with the path it is reached by) and each object in the store reachable or not, every
    commit message, and the texts in `extra` (what aq printed, by name).
    """
    find = needles(secrets)
    hits: list[tuple[str, str]] = []

    def look(place: str, data: bytes) -> None:
        for needle, secret in find.items():
            if needle in data and (place, secret) not in hits:
                hits.append((place, secret))

    git_dir = _git_dir(repo)
    bare = _git(repo, "rev-parse", "--is-bare-repository").decode().strip() == "true"
    if not bare:
        for path in sorted(repo.rglob("*")):
            if path == git_dir or git_dir in path.parents:
                continue
            rel = path.relative_to(repo).as_posix()
            look(f"work tree path {rel}", rel.encode())
            if path.is_file() and not path.is_symlink():
                look(f"work tree file {rel}", path.read_bytes())
    objects = git_dir / "objects"
    for path in sorted(git_dir.rglob("*")):
        if path == objects or objects in path.parents:
            continue
        rel = path.relative_to(git_dir).as_posix()
        look(f"git dir path {rel}", rel.encode())
        if path.is_file() and not path.is_symlink():
            look(f"git dir file {rel}", path.read_bytes())
    listed = _git(repo, "rev-list", "--objects", "--all", "--reflog").decode("utf-8", "replace")
    reached: dict[str, str] = {}
    for line in listed.splitlines():
        sha, _, name = line.partition(" ")
        reached.setdefault(sha, name)
        if name:
            look(f"object path {name}", name.encode())
    for sha, data in _cat_objects(repo, reached):
        look(f"object {sha[:12]} {reached[sha]}".rstrip(), data)
    every = _git(repo, "cat-file", "--batch-all-objects",
                 "--batch-check=%(objectname)").decode().split()
    for sha, data in _cat_objects(repo, (sha for sha in every if sha not in reached)):
        look(f"unreachable object {sha[:12]}", data)
    look("commit messages", _git(repo, "log", "--all", "--reflog", "--format=%B"))
    for name, text in (extra or {}).items():
        look(name, text.encode() if isinstance(text, str) else text)
    return hits


def leaks(hits: list[tuple[str, str]], allowed: Collection[str] = ()) -> str:
    """The hits outside `allowed` places, one per line, for an assertion message ('' if none)."""
    return "\n".join(f"{place}: {secret!r}" for place, secret in hits if place not in allowed)


MIN_SECRET_LENGTH = 6  # scrub.py leaves shorter lines of a multi-line value alone, and so do we
