"""Making a queue (`aq init`), and who the person at this machine is."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aq.core.lifecycle import STAGES
from aq.errors import UsageError
from aq.infra import gitops
from aq.infra.confine import check
from aq.infra.files import write_atomic
from aq.store.config import CONFIG_NAME, DEFAULT_CONFIG_TEXT
from aq.store.layout import EVENTS_DIR, LOGS_DIR, PROFILES_DIR, QUEUE_DIR

GITATTRIBUTES_LINE = "queue/.events/*.jsonl merge=union"


def who_am_i() -> str:
    """`user@host`: who a person's moves and adds are recorded as."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "someone"
    return f"{user}@{socket.gethostname().split('.')[0]}"


@dataclass(frozen=True, slots=True)
class InitResult:
    root: Path
    created: tuple[str, ...]
    git_initialized: bool
    committed: bool
    repository: Path | None = None  # the existing repository it committed into (`--here`)
    branch: str | None = None


def init_queue(root: Path, *, here: bool = False) -> InitResult:
    """Make (or complete) a queue at `root`. Running it again changes nothing. Inside an
    existing repository that holds no queue there yet, only with `here`: the queue's files
    become commits of that project's history."""
    root = root.expanduser().resolve()
    repository = _repository_around(root)
    if repository is not None and not here and not (root / CONFIG_NAME).exists():
        raise UsageError(
            f"{root} is inside the git repository {repository}: aq init would commit the queue "
            f"into its history; run `aq init --here` for that, or give a folder outside any "
            f"repository to make the queue a repository of its own")
    root.mkdir(parents=True, exist_ok=True)
    for name in (*STAGES, EVENTS_DIR, LOGS_DIR):  # nothing is made through a link (DESIGN §5)
        check(root, root / QUEUE_DIR / name, folder=True)
    check(root, root / PROFILES_DIR, folder=True)
    created: list[str] = []
    git_new = repository is None
    if git_new:
        gitops.init(root)
    for stage in STAGES:
        keep = root / QUEUE_DIR / stage / ".gitkeep"
        if not keep.exists():
            keep.parent.mkdir(parents=True, exist_ok=True)
            keep.touch()
            created.append(f"{QUEUE_DIR}/{stage}/")
    for extra in (EVENTS_DIR, LOGS_DIR):
        keep = root / QUEUE_DIR / extra / ".gitkeep"
        if not keep.exists():
            keep.parent.mkdir(parents=True, exist_ok=True)
            keep.touch()
    config = root / CONFIG_NAME
    if not config.exists():
        write_atomic(config, DEFAULT_CONFIG_TEXT)
        created.append(CONFIG_NAME)
    attributes = root / ".gitattributes"
    existing = attributes.read_text(encoding="utf-8") if attributes.exists() else ""
    if GITATTRIBUTES_LINE not in existing.splitlines():
        sep = "" if not existing or existing.endswith("\n") else "\n"
        write_atomic(attributes, f"{existing}{sep}{GITATTRIBUTES_LINE}\n")
        created.append(".gitattributes")
    created += _copy_catalog(root)
    ignore = root / QUEUE_DIR / ".gitignore"
    if not ignore.exists():
        write_atomic(ignore, ".state/\n.*.tmp-*\n.archive/\n")  # .archive: on a ref of its own
        created.append(f"{QUEUE_DIR}/.gitignore")
    committed = False
    if created:
        committed = gitops.commit_paths(root, [QUEUE_DIR, CONFIG_NAME, ".gitattributes",
                                               PROFILES_DIR], "aq: init queue",
                                        gitops.identity_args(root))
    return InitResult(root, tuple(created), git_new, committed, repository,
                      gitops.branch_of(root) if repository is not None else None)


def _repository_around(root: Path) -> Path | None:
    """The git repository `root` is (or would be, once made) inside, if any."""
    nearest = root
    while not nearest.exists() and nearest != nearest.parent:
        nearest = nearest.parent
    if not nearest.is_dir() or not gitops.is_work_tree(nearest):
        return None
    return gitops.toplevel(nearest)


def _copy_catalog(root: Path) -> list[str]:
    """The starter profiles shipped with aq, into profiles/: a file already there is kept."""
    from importlib.resources import files

    created = []
    catalog = files("aq.catalog").joinpath("profiles")
    for item in sorted(catalog.iterdir(), key=lambda entry: entry.name):
        target = root / PROFILES_DIR / item.name
        if item.name.endswith(".md") and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(target, item.read_text(encoding="utf-8"))
            created.append(f"{PROFILES_DIR}/{item.name}")
    return created
