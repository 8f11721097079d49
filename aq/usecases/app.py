"""Use-cases: each command of the CLI is one call here, returning a frozen result.

The CLI parses and renders; everything that reads or changes the queue happens here, with
`now` and `who` passed in.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from aq.core.events import ADDED, MOVED, Event, iso, parse_iso
from aq.core.ids import check_job_id, new_job_id
from aq.core.lifecycle import STAGES, Action, Stage, allowed_actions, check_move
from aq.core.manifest import Manifest, content_key, parse_manifest, render_manifest
from aq.core.profile import Profile, apply_profile, setting_sources
from aq.core.scheduler import Routing, Verdict, assess, dependency_cycles
from aq.errors import AqError, IdempotencyConflict, JobExists, UnsafePath, UsageError
from aq.infra.confine import check, read_regular
from aq.infra.files import write_atomic
from aq.store.config import CONFIG_NAME, DEFAULT_CONFIG_TEXT
from aq.store.queue import (
    EVENTS_DIR,
    HALT_FILE,
    LOGS_DIR,
    PROFILES_DIR,
    QUEUE_DIR,
    Job,
    Queue,
    Snapshot,
    Tx,
)

GITATTRIBUTES_LINE = "queue/.events/*.jsonl merge=union"


def who_am_i() -> str:
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "someone"
    return f"{user}@{socket.gethostname().split('.')[0]}"


# --- init ------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class InitResult:
    root: Path
    created: tuple[str, ...]
    git_initialized: bool
    committed: bool


def init_queue(root: Path) -> InitResult:
    """Make (or complete) a queue at `root`. Running it again changes nothing."""
    from aq.infra import gitops

    root = root.expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    for name in (*STAGES, EVENTS_DIR, LOGS_DIR):  # nothing is made through a link (DESIGN §5)
        check(root, root / QUEUE_DIR / name, folder=True)
    check(root, root / PROFILES_DIR, folder=True)
    created: list[str] = []
    git_new = False
    if not gitops.is_work_tree(root):
        gitops.init(root)
        git_new = True
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
        write_atomic(ignore, ".state/\n.*.tmp-*\n")
        created.append(f"{QUEUE_DIR}/.gitignore")
    committed = False
    if created:
        committed = gitops.commit_paths(root, [QUEUE_DIR, CONFIG_NAME, ".gitattributes",
                                               PROFILES_DIR], "aq: init queue",
                                        gitops.identity_args(root))
    return InitResult(root, tuple(created), git_new, committed)


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


# --- add -------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class AddResult:
    job: Job
    created: bool  # False: an add with the same idempotency key and content already made it
    message: str


def add_job(
    queue: Queue,
    body: str,
    fields: Mapping[str, Any],
    *,
    job_id: str | None,
    now: datetime,
    who: str,
    entropy: int,
    source: str = "the new job",
) -> AddResult:
    """Write a new job into the inbox (or find the one its idempotency key already made).
    `source` names where its text came from, in errors."""
    if not body.strip():
        raise UsageError("the job has no body: give a FILE, '-' for stdin, or --body TEXT")
    text = render_manifest(fields, body, source)
    probe_id = check_job_id(job_id) if job_id else "new-job"
    manifest = parse_manifest(probe_id, text, source)
    if manifest.idempotency_key:
        existing = _find_by_key(queue.snapshot(), manifest.idempotency_key)
        if existing is not None:
            return _same_key(existing, manifest)
    chosen = job_id or new_job_id(manifest.title, entropy)

    def write(tx: Tx) -> AddResult:
        if manifest.idempotency_key:  # again, under the lock: two adds at once make one job
            existing = _find_by_key(queue.snapshot(), manifest.idempotency_key)
            if existing is not None:
                return _same_key(existing, manifest)
        stage = tx.stage_of(chosen)
        if stage is not None:
            raise JobExists(f"job id {chosen} is taken (it is in {stage}): choose another --id")
        path = queue.job_path(Stage.INBOX, chosen)
        event: Event = {"ts": iso(now), "type": ADDED, "by": who, "to": Stage.INBOX}
        if manifest.idempotency_key:
            event["key"] = manifest.idempotency_key
        tx.append_event(chosen, event)
        tx.write(path, text)
        return AddResult(queue.resolve(chosen), True, f"added {chosen}")

    return queue.transact(write, f"aq: add {chosen} by {who}")


def _find_by_key(snapshot: Snapshot, key: str) -> Job | None:
    for job in snapshot.jobs:
        if job.manifest is not None and job.manifest.idempotency_key == key:
            return job
    return None


def _same_key(existing: Job, manifest: Manifest) -> AddResult:
    assert existing.manifest is not None
    if content_key(existing.manifest) != content_key(manifest):
        raise IdempotencyConflict(
            f"idempotency key {manifest.idempotency_key!r} already made job {existing.id} with other "
            "content: use a new key, or leave the job as it is"
        )
    return AddResult(existing, False, f"{existing.id} already exists with this idempotency key; nothing added")


# --- reading ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Listing:
    jobs: tuple[Job, ...]
    verdicts: Mapping[str, Verdict]  # inbox jobs only
    problems: tuple[str, ...]


# This machine's capabilities: given, unknown (None: not checked), or probed on demand from the
# tools whose versions the inbox's requirements compare (probing every version costs ~0.3 s).
Capabilities = frozenset[str] | Callable[[frozenset[str]], frozenset[str]] | None


def _worker_caps(capabilities: Capabilities, snapshot: Snapshot,
                 profiles: Mapping[str, Profile]) -> frozenset[str] | None:
    if not callable(capabilities):
        return capabilities
    from aq.core.requirements import tools_compared

    required: list[str] = []
    classes = False  # an engine class is resolved against the engines this machine has
    for job in snapshot.jobs:
        if job.stage is Stage.INBOX and job.manifest:
            required += job.manifest.capabilities
            classes = classes or job.manifest.engine_class is not None
            if job.manifest.profile and job.manifest.profile in profiles:
                profile = profiles[job.manifest.profile]
                required += profile.capabilities
                classes = classes or profile.engine_class is not None
    if not required and not classes:
        return frozenset()  # nothing to check: the probe (~30 ms of PATH lookups) is not needed
    return capabilities(tools_compared(required))


def _profiles_used(queue: Queue, snapshot: Snapshot) -> dict[str, Profile]:
    """The queue's profiles, read only when some job names one (a listing stays fast)."""
    if any(job.manifest and job.manifest.profile for job in snapshot.jobs):
        return queue.profiles().found
    return {}


def _assess(queue: Queue, snapshot: Snapshot, now: datetime, capabilities: Capabilities,
            worker_id: str | None = None) -> list[Verdict]:
    """What `aq run` on this machine would decide for each inbox job (`worker_id`: as which
    worker, for `prefers:`; None leaves preferences out)."""
    profiles = _profiles_used(queue, snapshot)
    config = queue.config
    routing = Routing(profiles, config.engine_classes, worker_id, config.prefer_window)
    return assess(snapshot.views(), now, halted=queue.halted(),
                  worker_caps=_worker_caps(capabilities, snapshot, profiles), routing=routing)


def list_jobs(
    queue: Queue,
    *,
    now: datetime,
    capabilities: Capabilities,
    stages: Sequence[Stage] = (),
    ready: bool = False,
    blocked: bool = False,
) -> Listing:
    snapshot = queue.snapshot()
    verdicts = {v.job.id: v for v in _assess(queue, snapshot, now, capabilities)}
    if blocked:
        verdicts.update(_unservable(queue, snapshot, verdicts))
    order = {stage: index for index, stage in enumerate(STAGES)}
    jobs = sorted(snapshot.jobs, key=lambda j: (order[j.stage], j.added, j.id))
    if stages:
        jobs = [job for job in jobs if job.stage in stages]
    if ready or blocked:
        jobs = [job for job in jobs if job.id in verdicts
                and ((ready and verdicts[job.id].ready) or (blocked and not verdicts[job.id].ready))]
    if ready:  # in the order `aq run` would take them
        order_of = {job_id: index for index, job_id in enumerate(verdicts)}
        jobs.sort(key=lambda j: order_of[j.id])
    return Listing(tuple(jobs), verdicts, snapshot.problems)


def _unservable(queue: Queue, snapshot: Snapshot, verdicts: Mapping[str, Verdict]
                ) -> dict[str, Verdict]:
    """Inbox jobs no worker of the fleet could take, judged by the capabilities each worker
    published in its last heartbeat: kind "fleet", with what none of them has."""
    if queue.remote is None:
        return {}
    fleet = [frozenset(str(cap) for cap in payload.get("capabilities") or ())
             for _commit, payload in queue.remote.observed_heartbeats().values()
             if payload.get("capabilities")]
    if not fleet:
        return {}
    from aq.core.profile import choose_engine
    from aq.core.scheduler import capabilities_missing

    profiles = _profiles_used(queue, snapshot)
    classes = queue.config.engine_classes
    routing = Routing(profiles, classes)
    unservable = {}
    for job_id, verdict in verdicts.items():
        manifest = verdict.job.manifest
        if manifest is None or verdict.kind not in (None, "capability", "halted", "not_before",
                                                      "dep", "lock", "preferred"):
            continue
        profile = profiles.get(manifest.profile) if manifest.profile else None
        manifest = apply_profile(manifest, profile)
        engines = (routing.engines_of(manifest.engine_class, profile)
                   if manifest.engine is None and manifest.engine_class else None)
        lacking: list[list[str]] = []
        for caps in fleet:
            missing = capabilities_missing(manifest.capabilities, caps)
            if engines is not None and choose_engine(str(manifest.engine_class), engines, caps) is None:
                missing.append(f"an engine of class {manifest.engine_class} ({', '.join(engines)})")
            if not missing:
                break
            lacking.append(missing)
        else:
            fewest = min(lacking, key=len)
            unservable[job_id] = Verdict(
                verdict.job, f"no worker of the fleet ({len(fleet)} seen) has advertised "
                f"{', '.join(fewest)}", "fleet")
    return unservable


@dataclass(frozen=True, slots=True)
class NextResult:
    chosen: Job | None
    verdicts: tuple[Verdict, ...]
    jobs: Mapping[str, Job]
    halted: str | None = None


def next_job(queue: Queue, *, now: datetime, capabilities: Capabilities,
             worker_id: str | None = None) -> NextResult:
    snapshot = queue.snapshot()
    halted = queue.halted()
    verdicts = _assess(queue, snapshot, now, capabilities, worker_id)
    by_id = snapshot.by_id()
    chosen = next((by_id[v.job.id] for v in verdicts if v.ready), None)
    return NextResult(chosen, tuple(verdicts), by_id, halted)


@dataclass(frozen=True, slots=True)
class Resolved:
    """One manifest value with where it came from: job, profile or queue default."""

    value: Any
    source: str


@dataclass(frozen=True, slots=True)
class JobDetail:
    job: Job
    events: tuple[Event, ...]
    resolved: Mapping[str, Resolved]
    verdict: Verdict | None
    allowed: tuple[str, ...]
    text: str
    tracker_sent: int = 0  # posts its tracker item got
    tracker_owed: tuple[tuple[str, str], ...] = ()  # (who sends it, since when) of posts owed


def show_job(queue: Queue, ref: str, *, now: datetime, capabilities: Capabilities) -> JobDetail:
    snapshot = queue.snapshot()
    job = queue.resolve(ref, snapshot)
    verdict = None
    if job.stage is Stage.INBOX:
        verdicts = _assess(queue, snapshot, now, capabilities)
        verdict = next((v for v in verdicts if v.job.id == job.id), None)
    resolved: dict[str, Resolved] = {}
    if job.manifest is not None:
        profile = queue.profiles().found.get(job.manifest.profile) if job.manifest.profile else None
        resolved = resolve_settings(queue, job.manifest, profile)
    try:  # a job file that is a link is never read: job.error says so
        text = read_regular(job.path, _rel(job)).decode("utf-8", "replace")
    except (OSError, AqError):
        text = ""
    events = tuple(queue.read_events(job.id))
    sent = 0
    owed: tuple[tuple[str, str], ...] = ()
    if job.manifest is not None and job.manifest.tracker_item:
        from aq.usecases.tracking import POSTED, owed_posts

        sent = sum(1 for event in events if event.get("type") == POSTED)
        owed = tuple((post.owner, post.since) for post in owed_posts(job, events))
    return JobDetail(job, events, resolved, verdict,
                     tuple(str(a) for a in allowed_actions(job.stage)), text, sent, owed)


def resolve_settings(queue: Queue, own: Manifest, profile: Profile | None = None
                     ) -> dict[str, Resolved]:
    """The job's settings as a worker runs them, each with where it came from: the job, its
    profile, or the queue's defaults."""
    config = queue.config
    manifest = apply_profile(own, profile)
    sources = setting_sources(own, profile)
    rule = config.retry_rule(manifest)

    def pick(key: str, value: Any, default: Any) -> Resolved:
        source = sources.get(key) or ("job" if key in own.keys else "queue default")
        return Resolved(default if source == "queue default" else value, source)

    resolved = {
        "profile": Resolved(own.profile, "job" if own.profile else "none"),
        "engine": pick("engine", manifest.engine, config.default_engine),
        "engine-class": pick("engine-class", manifest.engine_class, None),
        "cwd": pick("cwd", manifest.cwd, str(queue.root)),
        "timeout": pick("timeout", manifest.timeout, config.timeout),
        "verify": pick("verify", manifest.verify, None),
        "capabilities": pick("capabilities", list(manifest.capabilities), []),
        "allowed-scope": pick("allowed-scope", list(manifest.allowed_scope or ()) or None, None),
        "priority": pick("priority", manifest.priority, "medium"),
        "review-policy": pick("review-policy", manifest.review_policy, "manual"),
        "retry": Resolved({"max": rule.max, "backoff": rule.backoff, "on": sorted(rule.on)},
                          "job" if "retry" in manifest.keys else "queue default"),
        "lock": pick("lock", manifest.lock, None),
        "yolo": pick("yolo", manifest.yolo, False),
    }
    if manifest.engine is None and manifest.engine_class is not None:
        engines = Routing(engine_classes=config.engine_classes).engines_of(manifest.engine_class, profile)
        resolved["engine"] = Resolved(
            f"the first of {', '.join(engines) or '(none)'} this worker has "
            f"(engine-class {manifest.engine_class})", sources.get("engine-class", "job"))
    if own.profile and profile is None:
        resolved["profile"] = Resolved(own.profile, "job (missing: profiles/"
                                       f"{own.profile}.md does not exist)")
    return resolved


# --- profiles --------------------------------------------------------------------------------

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
    from aq.errors import ProfileNotFound

    loaded = queue.profiles()
    if name in loaded.found:
        return loaded.found[name]
    broken = [problem for problem in loaded.problems if problem.startswith(f"{PROFILES_DIR}/{name}.md")]
    if broken:
        raise ProfileNotFound(broken[0])
    known = ", ".join(sorted(loaded.found)) or "none"
    raise ProfileNotFound(f"no profile {name!r} in {PROFILES_DIR}/ (known: {known}); add "
                          f"{PROFILES_DIR}/{name}.md")


# --- lint ------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class LintResult:
    jobs: int
    problems: tuple[str, ...] = field(default=())


def lint(queue: Queue) -> LintResult:
    """Every manifest valid, every dep present, no dependency cycle, event logs readable."""
    from aq.store.queue import bad_event_lines

    try:
        queue.config  # noqa: B018 - a broken aq.yaml is a problem too
        problems: list[str] = []
    except AqError as err:
        problems = [str(err)]
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
    for job_id, manifest in sorted(manifests.items()):
        for dep in manifest.deps:
            if dep not in by_id:
                problems.append(f"{_rel(by_id[job_id])}: key 'deps': job {dep!r} does not exist")
        problems += [f"{_rel(by_id[job_id])}: {problem}"
                     for problem in _routing_problems(manifest, profiles.found, queue.config.engines)]
    seen_cycles: set[tuple[str, ...]] = set()
    for cycle in dependency_cycles(manifests).values():
        if tuple(cycle) not in seen_cycles:
            seen_cycles.add(tuple(cycle))
            problems.append("dependency cycle: " + " -> ".join([*cycle, cycle[0]]))
    events_dir = queue.qdir / EVENTS_DIR
    if events_dir.is_dir():
        for path in sorted(events_dir.glob("*.jsonl")):
            bad = bad_event_lines(path)
            if bad:
                problems.append(f"{queue.relative(path)}: line {bad[0]} is not a JSON event with a "
                                f"readable ts ({len(bad)} such line(s)); the rest of the log is used")
    problems += _refused(queue)  # logs and artifacts too; each link named once
    return LintResult(len(snapshot.jobs), tuple(dict.fromkeys(problems)))


def _refused(queue: Queue) -> list[str]:
    """Every link (or fifo, socket, device) among the files aq reads or writes: aq.yaml,
    profiles/, queue/ (DESIGN §5). Found without following any."""
    from aq.infra.confine import refusals

    return refusals(queue.root, (CONFIG_NAME, PROFILES_DIR, QUEUE_DIR))


def _profile_setting_problems(profiles: Mapping[str, Profile]) -> list[str]:
    from aq.core.requirements import check_requirement
    from aq.infra.scope import check_globs

    problems = []
    for name, profile in sorted(profiles.items()):
        source = f"{PROFILES_DIR}/{name}.md"
        problems += [f"{source}: key 'capabilities': {problem}" for req in profile.capabilities
                     if (problem := check_requirement(req))]
        if profile.allowed_scope is not None and (bad := check_globs(profile.allowed_scope)):
            problems.append(f"{source}: key 'allowed-scope': {bad}")
    return problems


def _routing_problems(manifest: Manifest, profiles: Mapping[str, Profile],
                      engines: Mapping[str, object]) -> list[str]:
    from aq.core.profile import profile_problem
    from aq.core.requirements import check_requirement
    from aq.infra.scope import check_globs

    problems = []
    if manifest.engine and manifest.engine not in engines:
        problems.append(f"key 'engine': {manifest.engine!r} is not defined (known: "
                        f"{', '.join(sorted(engines))}); add it under engines: in aq.yaml")
    if manifest.profile and manifest.profile not in profiles:
        problems.append(f"key 'profile': {profile_problem(manifest, profiles)}")
    elif manifest.profile and (refused := profile_problem(manifest, profiles)):
        problems.append(f"key 'yolo': {refused}")
    problems += [f"key 'capabilities': {problem}" for req in manifest.capabilities
                 if (problem := check_requirement(req))]
    if manifest.allowed_scope is not None and (bad := check_globs(manifest.allowed_scope)):
        problems.append(f"key 'allowed-scope': {bad}")
    return problems


def _rel(job: Job) -> str:
    return f"{QUEUE_DIR}/{job.stage}/{job.id}.md"


# --- human moves -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class MoveResult:
    job_id: str
    source: Stage
    target: Stage
    action: Action


def move_job(queue: Queue, ref: str, action: Action, *, who: str, now: datetime,
             reason: str | None = None, allow_out_of_scope: bool = False) -> MoveResult:
    """promote, ship, reject, requeue, cancel: refused unless the lifecycle allows it. A ship
    of a job whose last attempt changed files outside its allowed-scope is refused unless
    `allow_out_of_scope`, and the override is recorded with who made it."""
    job = queue.resolve(ref)
    job_id = job.id
    shipped: dict[str, object] = {}
    if action is Action.SHIP:  # every gate before the first side effect on the project's repo
        check_move(job_id, job.stage, action)
        _scope_gate(job_id, job.state.out_of_scope, allow_out_of_scope)
        shipped = _ship_work(queue, job, who)

    def change(tx: Tx) -> MoveResult:
        stage = tx.stage_of(job_id)
        if stage is None:
            raise AqError(f"{job_id} vanished while moving it: run 'aq ls'")
        target = check_move(job_id, stage, action)
        extra: dict[str, object] = dict(shipped)
        outside = tx.state(job_id).out_of_scope if action is Action.SHIP else ()
        _scope_gate(job_id, outside, allow_out_of_scope)
        if outside:  # the override is kept beside what the ship did
            extra.update({"override": "out_of_scope", "out_of_scope": list(outside)})
        why = reason or {"cancel": "canceled"}.get(str(action), f"{action} by {who}")
        tx.move(job_id, stage, target, {
            "ts": iso(now), "type": MOVED, "by": who, "from": stage, "to": target,
            "action": action, "why": why, **extra,
        })
        return MoveResult(job_id, stage, target, action)

    return queue.transact(change, f"aq: {action} {job_id} by {who}")


def _scope_gate(job_id: str, outside: tuple[str, ...], allowed: bool) -> None:
    """Refuse to ship a job that changed files outside its allowed-scope, unless a person said so."""
    if outside and not allowed:
        from aq.errors import MoveRefused

        raise MoveRefused(
            f"{job_id} changed {len(outside)} file(s) outside its allowed-scope "
            f"({', '.join(outside[:3])}{' …' if len(outside) > 3 else ''}): review them "
            "('aq show'), then 'aq ship --allow-out-of-scope' to ship anyway")


def _workspace_of(queue: Queue, job: Job) -> tuple[str, str | None, Path, Manifest] | None:
    """(repo, base, workspaces root, manifest with its profile) of a job that works on a repo."""
    if job.manifest is None:
        return None
    profile = queue.profiles().found.get(job.manifest.profile) if job.manifest.profile else None
    manifest = apply_profile(job.manifest, profile)
    repo = queue.config.repo_for(manifest)
    if repo is None:
        return None
    from aq.infra.repos import resolve_repo

    return (resolve_repo(repo, queue.root), queue.config.base_for(manifest),
            queue.config.workspaces_root(queue.workspace_key), manifest)


def _ship_work(queue: Queue, job: Job, who: str) -> dict[str, object]:
    """What `ship:` asks for a job with a repo, done before its stage moves: `merge` merges
    aq/<job> into base and pushes (a conflict refuses the ship; the job stays), `pr` opens a
    pull request with gh. Returns what the moved event records."""
    found = _workspace_of(queue, job)
    if found is None:
        return {}
    repo, base, root, manifest = found
    mode = queue.config.ship_for(manifest)
    if mode == "mark":
        return {}
    from aq.infra import gitops
    from aq.infra.repos import default_branch, ensure_cache, merge_into_base

    branch = f"aq/{job.id}"
    cache = ensure_cache(repo, root)
    base = base or default_branch(cache)
    if mode == "merge":
        merged = merge_into_base(repo, root, branch, base, f"aq: ship {job.id}: merge {branch}",
                                 gitops.identity_args(queue.root))
        return {"ship": "merge", "branch": branch, "base": base, "merged": merged}
    return {"ship": "pr", "branch": branch, "base": base,
            "pr": _open_pull_request(queue, repo, cache, job, branch, base)}


def _open_pull_request(queue: Queue, repo: str, cache: Path, job: Job, branch: str, base: str) -> str:
    """With gh when it is installed, else through the GitHub API (trackers.github, a token
    from the environment) when the repo is on GitHub; the pull request's page."""
    import shutil

    from aq.infra import proc

    title = job.manifest.title if job.manifest else job.id
    body = f"Job {job.id}, run by aq."
    gh = shutil.which("gh")
    if gh is None:
        return _pull_request_by_api(queue, repo, job, branch, base, title, body)
    done = proc.run([gh, "pr", "create", "--head", branch, "--base", base, "--title", title,
                     "--body", body], cwd=cache, timeout=120)
    if done.returncode != 0:
        reason = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["no answer"]
        raise AqError(f"ship: gh could not open a pull request for {branch}: {reason[0]}")
    return done.stdout.strip().splitlines()[-1]


def _pull_request_by_api(queue: Queue, repo: str, job: Job, branch: str, base: str, title: str,
                         body: str) -> str:
    import os
    import re
    from urllib.parse import urlsplit

    from aq.trackers.github import GitHub

    settings = queue.config.trackers.github
    api_host = urlsplit(settings.api_url).netloc
    hosts = {"github.com", api_host.removeprefix("api.")}
    found = re.match(r"^(?:https?://|ssh://git@|git@)([^/:]+)[:/]([^/]+)/([^/]+?)(?:\.git)?/?$",
                     repo)
    if found is None or found.group(1).rpartition("@")[2] not in hosts:
        raise AqError(f"ship: pr needs the GitHub CLI (install gh and run 'gh auth login'), or a "
                      f"repo on GitHub for its API; set ship: merge or mark for {job.id}")
    if not os.environ.get(settings.token_env):
        raise AqError(f"ship: pr needs gh (install it and run 'gh auth login') or a GitHub token "
                      f"in {settings.token_env}, to open a pull request for {job.id}")
    owner_repo = f"{found.group(2)}/{found.group(3)}"
    return GitHub(settings, os.environ).open_pull_request(owner_repo, branch, base, title, body)


@dataclass(frozen=True, slots=True)
class DiffResult:
    job_id: str
    branch: str
    base: str
    patch: str


def job_diff(queue: Queue, ref: str) -> DiffResult:
    """The patch a job's branch makes against its base, from the repo's remote."""
    job = queue.resolve(ref)
    found = _workspace_of(queue, job)
    if found is None:
        raise AqError(f"{job.id} works on no repo (no repo: in the job, its profile or aq.yaml): "
                      "there is no branch to compare")
    repo, base, root, _manifest = found
    from aq.infra.repos import default_branch, diff_against_base, ensure_cache

    cache = ensure_cache(repo, root)
    base = base or default_branch(cache)
    branch = f"aq/{job.id}"
    return DiffResult(job.id, branch, base, diff_against_base(cache, branch, base, fetch=False))


# --- gc --------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Freed:
    kind: str  # cache, logs, branch
    what: str
    bytes: int


def gc(queue: Queue, *, now: datetime, older_than: float, branches: bool,
       dry_run: bool) -> tuple[Freed, ...]:
    """Free what aq keeps and no longer needs: repo caches of this machine unused for
    `older_than` seconds (none with a worktree), logs and artifacts of jobs final for longer
    than aq.yaml log_retention, and (`branches`) the aq/<job> branches of jobs shipped longer
    than `older_than` ago. With `dry_run`, only says what it would free."""
    freed = _gc_branches(queue, now, older_than, dry_run) if branches else []  # uses the caches
    freed += _gc_caches(queue, now, older_than, dry_run)
    freed += _gc_logs(queue, now, dry_run)
    return tuple(freed)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _gc_caches(queue: Queue, now: datetime, older_than: float, dry_run: bool) -> list[Freed]:
    """Repository caches not fetched for `older_than`, none that a worktree of any queue on
    the machine uses (caches are shared); also the per-queue caches of aq before they were."""
    import shutil

    from aq.infra.repos import caches_dir

    root = queue.config.workspaces_root(queue.workspace_key)
    folders = [folder for folder in (caches_dir(root), root / "repos") if folder.is_dir()]
    caches = [p for folder in folders for p in folder.iterdir()
              if p.is_dir() and not p.name.endswith(".new")]
    if not caches:
        return []
    in_use = set()
    for gitfile in [*root.parent.glob("*/worktrees/*/.git"), *root.parent.glob("*/merges/*/.git")]:
        text = gitfile.read_text(encoding="utf-8", errors="replace")
        in_use |= {cache for cache in caches if str(cache) in text}
    freed = []
    for cache in sorted(caches):
        fetched = cache / "FETCH_HEAD"  # every attempt fetches its cache first
        used = (fetched if fetched.exists() else cache).stat().st_mtime
        if cache in in_use or now.timestamp() - used < older_than:
            continue
        freed.append(Freed("cache", str(cache), _size(cache)))
        if not dry_run:
            shutil.rmtree(cache, ignore_errors=True)
            cache.with_name(cache.name + ".lock").unlink(missing_ok=True)
    return freed


FINAL = (Stage.SHIPPED, Stage.FAILED, Stage.DEAD_LETTER)


def _last_event_age(queue: Queue, job: Job, now: datetime) -> float | None:

    events = queue.read_events(job.id)
    stamps = [parse_iso(str(e["ts"])) for e in events if e.get("ts")]
    return (now - max(stamps)).total_seconds() if stamps else None


def _gc_logs(queue: Queue, now: datetime, dry_run: bool) -> list[Freed]:
    retention = queue.config.log_retention
    if retention is None:
        return []
    old = []
    for job in queue.snapshot().jobs:
        logs = queue.logs_dir(job.id)
        age = _last_event_age(queue, job, now) if job.stage in FINAL and logs.is_dir() else None
        if age is not None and age > retention:
            old.append((job.id, logs))
    freed = [Freed("logs", queue.relative(logs), _size(logs)) for _, logs in old]
    if old and not dry_run:
        def change(tx: Tx) -> None:
            for _, logs in old:
                for path in sorted(p for p in logs.rglob("*") if p.is_file()):
                    tx.remove(path)

        queue.transact(change, f"aq: gc: logs of {len(old)} job(s) final for over "
                       f"{retention / 86400:.0f} day(s)")
        for _, logs in old:  # git keeps no folders: the emptied ones go too
            for folder in sorted((p for p in logs.rglob("*") if p.is_dir()), reverse=True):
                with contextlib.suppress(OSError):
                    folder.rmdir()
            with contextlib.suppress(OSError):
                logs.rmdir()
    return freed


def _gc_branches(queue: Queue, now: datetime, older_than: float, dry_run: bool) -> list[Freed]:
    from aq.infra import gitops

    freed = []
    for job in queue.snapshot().jobs:
        found = _workspace_of(queue, job) if job.stage is Stage.SHIPPED else None
        age = _last_event_age(queue, job, now) if found else None
        if found is None or age is None or age < older_than:
            continue
        from aq.infra.repos import cache_dir_for

        cache = cache_dir_for(found[0], found[2])  # as last fetched: a fetch would mark it used
        if not cache.is_dir():
            continue
        branch = f"aq/{job.id}"
        if gitops.git(cache, "rev-parse", "-q", "--verify", f"refs/remotes/origin/{branch}",
                      check=False).returncode != 0:
            continue
        freed.append(Freed("branch", f"{found[0]} {branch}", 0))
        if not dry_run:
            gitops.git(cache, "push", "-q", "origin", "--delete", branch, timeout=120)
    return freed


# --- halt ------------------------------------------------------------------------------------

def halt(queue: Queue, *, reason: str, who: str, now: datetime) -> bool:
    """Create queue/HALT: no worker claims anything until `resume`. False if already halted."""
    def change(tx: Tx) -> bool:
        if queue.halted() is not None:
            return False
        tx.write(queue.qdir / HALT_FILE, f"{reason}\nby {who} at {iso(now)}\n")
        return True

    return queue.transact(change, f"aq: halt by {who}: {reason}")


def resume(queue: Queue, *, who: str) -> bool:
    def change(tx: Tx) -> bool:
        if queue.halted() is None:
            return False
        tx.remove(queue.qdir / HALT_FILE)
        return True

    return queue.transact(change, f"aq: resume by {who}")


# --- logs ------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class LogRef:
    job_id: str
    attempt: int
    path: Path
    running: bool  # the attempt is running now on this machine: follow the live file


def find_log(queue: Queue, ref: str, attempt: int | None) -> LogRef:
    job = queue.resolve(ref)
    count = job.state.attempt_count
    if count == 0:
        raise AqError(f"{job.id} has not been run yet (it is in {job.stage})")
    number = attempt or count
    if not 1 <= number <= count:
        raise UsageError(f"{job.id} has attempts 1 to {count}; --attempt {number} is not one of them")
    live = queue.running_dir() / job.id / f"{number}.log"
    kept = queue.logs_dir(job.id) / f"{number}.log"
    check(queue.root, kept)  # a link is refused, never followed
    is_running = job.stage is Stage.BUILDING and number == count and not kept.exists()
    if is_running and live.exists():
        return LogRef(job.id, number, live, True)
    if kept.exists():
        return LogRef(job.id, number, kept, False)
    if is_running:
        raise AqError(f"{job.id} attempt {number} runs on another machine ({job.state.holder}); "
                      "its log arrives when the attempt ends")
    raise AqError(f"no log kept for {job.id} attempt {number}")



# --- fleet: workers and fsck -----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class WorkerRow:
    worker: str
    host: str | None
    silent_for: float | None  # seconds since its heartbeat changed; None: unknown
    their_clock: str | None  # the wall time the worker wrote into its heartbeat (its own clock)
    jobs: tuple[str, ...]
    retiring: bool
    age_from: str = "this machine"  # or "its clock": first seen here, aged by its own wall time


def list_workers(queue: Queue, *, monotonic: float, now: datetime | None = None
                 ) -> tuple[WorkerRow, ...]:
    """Each worker whose heartbeat ref is on the remote, as this machine sees it now."""
    from aq.core.leases import watch_gap
    from aq.store.sync import LeaseObserver

    remote = queue.remote
    if remote is None:
        raise AqError("this queue has no git remote: workers publish heartbeats only to a remote")
    reachable = queue.refresh_from_remote()
    if not reachable:
        raise AqError(f"cannot reach the queue's remote {remote.name!r}: try again when it answers")
    snapshot = queue.snapshot()
    building = {job.state.token: job for job in snapshot.jobs
                if job.stage is Stage.BUILDING and job.state.token}
    observer = LeaseObserver(queue.state_dir / "leases.json")
    with queue.lock():
        observer.observe(remote, monotonic, {t: str(j.state.holder) for t, j in building.items()},
                         gap=watch_gap(queue.config.lease_ttl, queue.config.poll))
        seen = observer.workers(monotonic)
        changing = observer.seen_changing()
    rows = []
    for worker, (silent, payload) in sorted(seen.items()):
        # the jobs it holds: its claims on the remote (its heartbeat lists them only from its next beat)
        jobs = tuple(sorted(job.id for job in building.values() if job.state.holder == worker))
        age_from = "this machine"
        written = _wall_age(payload.get("wall"), now)
        if worker not in changing and written is not None and written > (silent or 0.0):
            # never seen to beat here: how long ago it did is only in the beat, on its clock
            silent, age_from = written, "its clock"
        rows.append(WorkerRow(worker, payload.get("host"), silent, payload.get("wall"), jobs,
                              bool(payload.get("retiring")), age_from))
    return tuple(rows)


def _wall_age(wall: object, now: datetime | None) -> float | None:
    if not isinstance(wall, str) or now is None:
        return None
    try:
        return (now - parse_iso(wall)).total_seconds()
    except (ValueError, TypeError):
        return None


@dataclass(frozen=True, slots=True)
class FsckResult:
    commits: int
    jobs: int
    problems: tuple[str, ...]


def fsck(queue: Queue, *, history: bool) -> FsckResult:
    """Every job in exactly one stage at HEAD (and at every commit with `history`), every
    building job holding a lease, every event log readable."""
    from aq.infra import gitops
    from aq.store.queue import bad_event_lines

    if queue.git_dir is None:
        raise AqError("this queue is not in a git repository: nothing to check")
    problems: list[str] = []
    listed = gitops.git(queue.root, "ls-tree", "-r", "--name-only", "HEAD", "--", QUEUE_DIR,
                        check=False).stdout.splitlines()
    stages = _stages_by_job(listed)
    for job_id, where in sorted(stages.items()):
        if len(where) > 1:
            problems.append(f"HEAD: job {job_id} is in {len(where)} stages: {', '.join(sorted(where))}")
    for job_id, where in sorted(stages.items()):
        if "building" in where and queue.state_of(job_id).token is None:
            problems.append(f"HEAD: job {job_id} is in building but holds no lease (no claim event)")
    events_dir = queue.qdir / EVENTS_DIR
    for path in sorted(events_dir.glob("*.jsonl")) if events_dir.is_dir() else []:
        bad = bad_event_lines(path)
        if bad:
            problems.append(f"{queue.relative(path)}: line {bad[0]} is not a readable event "
                            f"({len(bad)} such line(s))")
    problems += _committed_links(queue) + _refused(queue)
    commits = 1
    if history:
        commits, found = _fsck_history(queue)
        problems += found
    return FsckResult(commits, len(stages), tuple(problems))


def _committed_links(queue: Queue) -> list[str]:
    """Symbolic links HEAD holds among aq's files: a clone checks them out as links."""
    from aq.infra import gitops

    tree = gitops.git(queue.root, "ls-tree", "-r", "HEAD", "--", CONFIG_NAME, PROFILES_DIR,
                      QUEUE_DIR, check=False).stdout
    return [f"HEAD: {path}: committed as a symbolic link, which aq never follows: 'git rm' it "
            "and commit" for meta, _, path in (line.partition("\t") for line in tree.splitlines())
            if meta.startswith("120000 ")]


def _stages_by_job(paths: Sequence[str]) -> dict[str, set[str]]:
    stages: dict[str, set[str]] = {}
    stage_names = {str(stage) for stage in STAGES}
    for path in paths:
        parts = path.split("/")
        if len(parts) == 3 and parts[1] in stage_names and parts[2].endswith(".md"):
            stages.setdefault(parts[2][:-3], set()).add(parts[1])
    return stages


def _fsck_history(queue: Queue) -> tuple[int, list[str]]:
    """Replay the first-parent history of HEAD file by file, checking each commit."""
    from aq.infra import gitops

    log = gitops.git(queue.root, "log", "--first-parent", "--reverse", "--no-renames",
                     "--format=@%H", "--name-status", "HEAD", "--", QUEUE_DIR).stdout
    stage_names = {str(stage) for stage in STAGES}
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
        parts = path.split("/")
        if len(parts) != 3 or parts[1] not in stage_names or not parts[2].endswith(".md"):
            continue
        job_id, stage = parts[2][:-3], parts[1]
        touched.add(job_id)
        if status.startswith("D"):
            present.get(job_id, set()).discard(stage)
        else:
            present.setdefault(job_id, set()).add(stage)
    if commit:
        check()
    return commits, problems
