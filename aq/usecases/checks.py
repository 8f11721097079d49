"""Checks of the queue a person runs: `aq lint` (manifests, deps, event logs) and `aq fsck`
(one stage per job, a lease per building job, at HEAD or at every commit)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aq.core.ids import is_job_id
from aq.core.lifecycle import STAGES
from aq.core.manifest import Manifest
from aq.core.profile import Profile
from aq.core.requirements import check_requirement
from aq.core.scheduler import dependency_cycles
from aq.errors import AqError, NotApplicable, QueueBusy, UnsafePath
from aq.infra import gitops
from aq.infra.confine import describe, refusals
from aq.infra.scope import check_globs
from aq.store.config import CONFIG_NAME, QueueConfig
from aq.store.eventlog import bad_event_lines
from aq.store.layout import (
    ARCHIVE_DIR,
    BRANCH_ARCHIVE_DIR,
    EVENTS_DIR,
    FINAL_STAGES,
    PROFILES_DIR,
    QUEUE_DIR,
)
from aq.store.queue import Queue
from aq.usecases.jobs import job_file, mcp_refusals
from aq.usecases.routes import job_problems, setting_problems


@dataclass(frozen=True, slots=True)
class LintResult:
    jobs: int
    problems: tuple[str, ...] = field(default=())


def lint(queue: Queue) -> LintResult:
    """Every manifest valid, every dep present, no dependency cycle, event logs readable."""
    config: QueueConfig | None
    try:
        config, problems = queue.config, []
    except AqError as err:  # a broken aq.yaml is a problem too; what needs it is not checked
        config, problems = None, [str(err)]
    try:
        snapshot = queue.snapshot()
    except UnsafePath as err:  # a stage folder is a link: nothing in the queue is read
        return LintResult(0, tuple(dict.fromkeys([*problems, str(err), *_refused(queue)])))
    problems += list(snapshot.problems)
    by_id = snapshot.by_id()
    manifests = {job.id: job.manifest for job in snapshot.jobs if job.manifest is not None}
    for job in snapshot.jobs:
        if job.error:
            problems.append(job.error)
    profiles = queue.profiles()
    problems += list(profiles.problems)
    problems += _profile_setting_problems(profiles.found)
    problems += setting_problems(config, profiles.found) if config is not None else []
    for job_id, manifest in sorted(manifests.items()):
        for dep in manifest.deps:
            if dep not in by_id and not (is_job_id(dep) and queue.layout.find_archived(dep)):
                problems.append(f"{job_file(by_id[job_id])}: key 'deps': job {dep!r} does not exist")
        problems += [f"{job_file(by_id[job_id])}: {problem}" for problem in
                     [*job_problems(manifest, profiles.found, config), *_job_setting_problems(manifest)]]
        if manifest.mcp and config is not None:
            ladder = manifest.retry.escalate if manifest.retry else ()
            problems += [f"{job_file(by_id[job_id])}: key 'mcp': {line}" for line in mcp_refusals(
                queue, manifest.engine, manifest.engine_class, manifest.profile,
                [*ladder, *manifest.engines])]
    seen_cycles: set[tuple[str, ...]] = set()
    for cycle in dependency_cycles(manifests).values():
        if tuple(cycle) not in seen_cycles:
            seen_cycles.add(tuple(cycle))
            problems.append("dependency cycle: " + " -> ".join([*cycle, cycle[0]]))
    problems += _event_log_problems(queue, by_id) + _refused(queue)  # each link named once
    return LintResult(len(snapshot.jobs), tuple(dict.fromkeys(problems)))


def _event_log_problems(queue: Queue, known: Collection[str] | None) -> list[str]:
    """The logs of queue/.events: a folder in a log's place (its job cannot be claimed or
    moved), lines that are not events, and (given the `known` jobs) a log whose job is nowhere.
    Links there are named by `_refused`, with the rest of the queue's."""
    problems: list[str] = []
    suspects = []
    for path in sorted((queue.qdir / EVENTS_DIR).glob("*.jsonl")):
        if path.is_dir() and not path.is_symlink():
            problems.append(str(describe(queue.relative(path), path.lstat().st_mode)))
            continue
        if known is not None and path.name[:-6] not in known:
            suspects.append(path)
        bad = bad_event_lines(path)
        if bad:
            problems.append(f"{queue.relative(path)}: line {bad[0]} is not a JSON event with a "
                            f"readable ts ({len(bad)} such line(s)); the rest of the log is used")
    return problems + _orphan_logs(queue, suspects)


def _orphan_logs(queue: Queue, suspects: Sequence[Path]) -> list[str]:
    """The logs of `suspects` whose job is in no stage nor the archive, looked for again under
    the queue's lock: a job being added writes its log first, and a job moving between stages
    can be missed by a listing of them. A queue aq may not lock is looked at without it."""
    def orphans() -> list[str]:
        return [_orphan_log(queue.relative(path), path.name[:-6]) for path in suspects
                if path.exists() and not queue.layout.has_job(path.name[:-6])]

    if not suspects:
        return []
    try:
        with queue.lock(timeout=10):
            return orphans()
    except (QueueBusy, OSError):
        return orphans()


def _refused(queue: Queue) -> list[str]:
    """Every link (or fifo, socket, device) among the files aq reads or writes: aq.yaml,
    profiles/, queue/ (DESIGN §5). Found without following any."""
    return refusals(queue.root, (CONFIG_NAME, PROFILES_DIR, QUEUE_DIR))


def _profile_setting_problems(profiles: Mapping[str, Profile]) -> list[str]:
    problems = []
    for name, profile in sorted(profiles.items()):
        source = f"{PROFILES_DIR}/{name}.md"
        problems += [f"{source}: key 'capabilities': {problem}" for req in profile.capabilities
                     if (problem := check_requirement(req))]
        if profile.allowed_scope is not None and (bad := check_globs(profile.allowed_scope)):
            problems.append(f"{source}: key 'allowed-scope': {bad}")
    return problems


def _job_setting_problems(manifest: Manifest) -> list[str]:
    """Advice on a job's settings (a malformed one makes the job invalid: the parser says it)."""
    problems = [f"key 'capabilities': {problem}" for req in manifest.capabilities
                if (problem := check_requirement(req))]  # node=20: only a worker tagged so
    if manifest.allowed_scope is not None and (bad := check_globs(manifest.allowed_scope)):
        problems.append(f"key 'allowed-scope': {bad}")
    return problems


@dataclass(frozen=True, slots=True)
class FsckResult:
    commits: int
    jobs: int
    problems: tuple[str, ...]


# GitHub's limit on the entries of one folder (DESIGN §5): a folder of the queue that reaches it
# is a problem before the forge refuses it.
FOLDER_LIMIT = 3000


def fsck(queue: Queue, *, history: bool) -> FsckResult:
    """Every job in exactly one place at HEAD (a stage folder or a part of the archive; at
    every commit with `history`, which needs the whole history), every building job holding a
    lease, every event log of the stage folders readable, no folder of the queue as full as a
    forge allows, an archived job's event log archived with it."""
    if queue.git_dir is None:
        raise NotApplicable("this queue is not in a git repository: nothing to check")
    if history and gitops.git(queue.root, "rev-parse", "--is-shallow-repository",
                              check=False).stdout.strip() == "true":
        raise NotApplicable("fsck --history checks every commit since the queue began, and this "
                            "clone is shallow (made with --depth): run 'git fetch --unshallow' "
                            "first, or 'aq fsck' without --history to check HEAD")
    problems: list[str] = []
    listed = gitops.git(queue.root, "ls-tree", "-r", "--name-only", "HEAD", "--", QUEUE_DIR,
                        check=False).stdout.splitlines()
    places = _places_by_job(listed)
    for job_id, where in sorted(places.items()):
        if len(where) > 1:
            problems.append(f"HEAD: job {job_id} is in {len(where)} places: {', '.join(sorted(where))}")
    for job_id, where in sorted(places.items()):
        if "building" in where and queue.state_of(job_id).token is None:
            problems.append(f"HEAD: job {job_id} is in building but holds no lease (no claim event)")
    # the archive's ref first: its jobs join `places`, so an event log left in queue/.events
    # for a job the ref holds is named as not beside its file
    problems += _archive_ref_problems(queue, places)
    problems += _stray_event_logs(listed, places, "HEAD") + _full_folders(listed, "HEAD")
    problems += _event_log_problems(queue, None) + _committed_links(queue) + _refused(queue)
    commits = 1
    if history:
        commits, found = _fsck_history(queue)
        problems += found
    return FsckResult(commits, len(places), tuple(problems))


def _archive_ref_problems(queue: Queue, places: dict[str, set[str]]) -> list[str]:
    """The archive's own ref (aq.store.archive_ref) checked as HEAD is: each job in one part,
    its event log beside it, no folder as full as a forge allows. Its jobs are added to
    `places`; a copy of a job a stage folder holds is no problem (that job came back)."""
    shelf = queue.archive_ref
    tip = shelf.tip() if shelf is not None else None
    if shelf is None or tip is None:
        return []
    listed = gitops.git(queue.root, "ls-tree", "-r", "--name-only", tip, "--",
                        f"{QUEUE_DIR}/{ARCHIVE_DIR}", check=False).stdout.splitlines()
    archived = _places_by_job(listed)
    problems = [f"{shelf.ref}: job {job_id} is in {len(where)} places: {', '.join(sorted(where))}"
                for job_id, where in sorted(archived.items()) if len(where) > 1]
    problems += _stray_event_logs(listed, archived, shelf.ref) + _full_folders(listed, shelf.ref)
    for job_id, where in archived.items():
        if not places.get(job_id, set()) & _STAGE_NAMES:
            places.setdefault(job_id, set()).update(where)
    return problems


def _committed_links(queue: Queue) -> list[str]:
    """Symbolic links HEAD holds among aq's files: a clone checks them out as links."""
    tree = gitops.git(queue.root, "ls-tree", "-r", "HEAD", "--", CONFIG_NAME, PROFILES_DIR,
                      QUEUE_DIR, check=False).stdout
    return [f"HEAD: {path}: committed as a symbolic link, which aq never follows: 'git rm' it "
            "and commit" for meta, _, path in (line.partition("\t") for line in tree.splitlines())
            if meta.startswith("120000 ")]


_STAGE_NAMES = frozenset(str(stage) for stage in STAGES)
_FINAL_NAMES = frozenset(str(stage) for stage in FINAL_STAGES)
_ARCHIVE_NAMES = frozenset((ARCHIVE_DIR, BRANCH_ARCHIVE_DIR))


def _place(path: str) -> tuple[str, str] | None:
    """(job id, place) of a job file's path: its stage (queue/<stage>/<id>.md), or its part
    of the archive and stage (.archive/<yyyy>/<mm>/<nnn>/<stage>, or the branch's archive/...);
    None for any other path."""
    parts = path.split("/")
    if not parts[-1].endswith(".md"):
        return None
    if len(parts) == 3 and parts[1] in _STAGE_NAMES:
        return parts[2][:-3], parts[1]
    if len(parts) == 7 and parts[1] in _ARCHIVE_NAMES and parts[5] in _FINAL_NAMES:
        return parts[6][:-3], "/".join(parts[1:6])
    return None


def _places_by_job(paths: Sequence[str]) -> dict[str, set[str]]:
    places: dict[str, set[str]] = {}
    for path in paths:
        found = _place(path)
        if found is not None:
            places.setdefault(found[0], set()).add(found[1])
    return places


def _stray_event_logs(paths: Sequence[str], places: Mapping[str, set[str]], where_from: str
                      ) -> list[str]:
    """An event log that is not beside its job's file: an archived job's in queue/.events/ (a
    write after it was archived), or a part's for a job that is not in that part; or one of a
    job whose file is nowhere (removed by hand: its history explains a job no one can see)."""
    problems = []
    for path in paths:
        parts = path.split("/")
        if not parts[-1].endswith(".jsonl") or parts[-2] != EVENTS_DIR:
            continue
        job_id, where = parts[-1][:-6], places.get(parts[-1][:-6], set())
        base = "/".join(parts[1:-2])  # "" for queue/.events, else .archive/<yyyy>/<mm>/<nnn>
        beside = any(place.rpartition("/")[0] == base for place in where)
        if not where:
            problems.append(f"{where_from}: {_orphan_log(path, job_id)}")
        elif not beside:
            problems.append(f"{where_from}: {path}: the event log of job {job_id} is not beside "
                            f"its file ({QUEUE_DIR}/{sorted(where)[0]}): move it there")
    return problems


def _orphan_log(path: str, job_id: str) -> str:
    return (f"{path}: the event log of job {job_id}, whose file is in no stage nor the archive: "
            f"put the file back from git history (git log -- '{QUEUE_DIR}/*/{job_id}.md'), or "
            "remove the log")


def _full_folders(paths: Sequence[str], where_from: str) -> list[str]:
    """Folders of the queue with FOLDER_LIMIT entries or more at HEAD."""
    children: dict[str, set[str]] = {}
    for path in paths:
        folder, _, name = path.rpartition("/")
        while folder and name not in children.setdefault(folder, set()):
            children[folder].add(name)
            folder, _, name = folder.rpartition("/")
    return [f"{where_from}: {folder} holds {len(names):,} entries, as many as a forge such as "
            f"GitHub allows in one folder ({FOLDER_LIMIT:,}): run 'aq archive' (--older-than 1d, "
            "if the jobs are recent)" for folder, names in sorted(children.items())
            if len(names) >= FOLDER_LIMIT]


def _fsck_history(queue: Queue) -> tuple[int, list[str]]:
    """Replay the first-parent history of HEAD file by file, checking each commit: a job moved
    into the archive leaves its stage folder in the commit that archives it."""
    log = gitops.git(queue.root, "log", "--first-parent", "--reverse", "--no-renames",
                     "--format=@%H", "--name-status", "HEAD", "--", QUEUE_DIR).stdout
    present: dict[str, set[str]] = {}
    problems: list[str] = []
    commits = 0
    commit = ""
    touched: set[str] = set()

    def check() -> None:
        for job_id in touched:
            if len(present.get(job_id, ())) > 1:
                problems.append(f"commit {commit[:10]}: job {job_id} is in "
                                f"{', '.join(sorted(present[job_id]))}")

    for line in log.splitlines():
        if line.startswith("@"):
            if commit:
                check()
            commit, touched = line[1:], set()
            commits += 1
            continue
        status, _, path = line.partition("\t")
        found = _place(path)
        if found is None:
            continue
        job_id, place = found
        touched.add(job_id)
        if status.startswith("D"):
            present.get(job_id, set()).discard(place)
        else:
            present.setdefault(job_id, set()).add(place)
    if commit:
        check()
    return commits, problems
