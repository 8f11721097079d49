"""One job: adding it, and showing it with its settings resolved and why it waits."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aq.core.children import child_key, family
from aq.core.events import POSTED, Event, added, iso
from aq.core.ids import check_job_id, new_job_id
from aq.core.lifecycle import Stage, allowed_actions
from aq.core.manifest import (
    MAX_JOB_BYTES,
    Manifest,
    content_key,
    parse_manifest,
    render_manifest,
    split_frontmatter,
)
from aq.core.profile import Profile, apply_profile, setting_sources
from aq.core.review import REVIEW_KEY
from aq.core.samples import SAMPLE_KEY
from aq.core.scheduler import Routing, Verdict
from aq.errors import AqError, IdempotencyConflict, JobExists, ManifestError, UsageError
from aq.infra.confine import read_file, read_regular
from aq.infra.mcpconfig import refusals
from aq.store.eventlog import read_events
from aq.store.layout import QUEUE_DIR
from aq.store.queue import Queue
from aq.store.snapshot import Job
from aq.store.tx import Tx
from aq.usecases.listing import Capabilities, assess_inbox
from aq.usecases.routes import undefined_engine, unserved_class
from aq.usecases.tracker_posts import owed_posts


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
    reserved: bool = False,
    guard: Callable[[Tx], None] | None = None,
    spawned: bool = False,
) -> AddResult:
    """Write a new job into the inbox (or find the one its idempotency key already made).
    `source` names where its text came from, in errors; `guard` refuses the add, under the
    lock, when what it depends on has changed. Keys starting `review:` are aq's own
    (`reserved`: a review the worker asks for), and so are `sample:` ones: no one else may make
    a job pass as a review, or as a sample that wins. A child (`parent:`) is added only
    `spawned` (aq.usecases.children), which checks its parent is there and at work."""
    if not body.strip():
        raise UsageError("the job has no body: give a FILE, '-' for stdin, or --body TEXT")
    text = render_manifest(fields, body, source)
    probe_id = check_job_id(job_id) if job_id else "new-job"
    manifest = parse_manifest(probe_id, text, source)
    _check_maker(manifest, source, reserved=reserved, spawned=spawned)
    if manifest.idempotency_key:
        existing = _find_by_key(queue, manifest.idempotency_key)
        if existing is not None:
            return _same_key(existing, manifest)
    chosen = job_id or new_job_id(manifest.title, entropy)
    kids = _up_front_children(queue, manifest, chosen, entropy, source)

    def write(tx: Tx) -> AddResult:
        if guard is not None:
            guard(tx)
        if manifest.idempotency_key:  # again, under the lock: two adds at once make one job
            existing = _find_by_key(queue, manifest.idempotency_key)
            if existing is not None:
                return _same_key(existing, manifest)
        stage = tx.stage_of(chosen)
        if stage is not None:
            raise JobExists(f"job id {chosen} is taken (it is in {stage}): choose another --id")
        path = queue.job_path(Stage.INBOX, chosen)
        event = added(iso(now), who)
        if manifest.idempotency_key:
            event["key"] = manifest.idempotency_key
        tx.append_event(chosen, event)
        tx.write(path, text)
        for kid_id, kid_text in kids:  # in the same commit: a parent is never without them
            if tx.stage_of(kid_id) is not None:
                raise JobExists(f"job id {kid_id} is taken: add the job again")
            tx.append_event(kid_id, added(iso(now), who))
            tx.write(queue.job_path(Stage.INBOX, kid_id), kid_text)
        return AddResult(queue.resolve(chosen), True, f"added {chosen}"
                         + (f" with {len(kids)} children" if kids else ""))

    return queue.transact(write, f"aq: add {chosen} by {who}")


def check_names(queue: Queue, fields: Mapping[str, Any], source: str, *, hint: str = "") -> None:
    """An engine or profile that does not exist would only fail at run time: refuse it now.
    `hint`: how this front end adds it anyway, if it can."""
    engine, profile = fields.get("engine"), fields.get("profile")
    retry = fields.get("retry")
    ladder = retry.get("escalate") if isinstance(retry, dict) else None
    for step in ladder if isinstance(ladder, list) else ():
        _need_engine(queue, step, "retry.escalate: engine", "retry", source, hint)
    _need_engine(queue, engine, "engine", "engine", source, hint)
    _need_profile(queue, profile, "profile", "profile", source, hint)
    _need_class(queue, fields, source, hint)
    _check_samples(queue, fields, source, hint)
    _check_review(queue, fields, source, hint)
    if fields.get("mcp") is True:
        named = fields.get("engines")
        more = [part.strip() for item in ([named] if isinstance(named, str) else named or [])
                if isinstance(item, str) for part in item.split(",")]
        more += [step for step in ladder if isinstance(step, str)] if isinstance(ladder, list) else []
        klass = fields.get("engine-class")
        refused = mcp_refusals(queue, engine if isinstance(engine, str) else None,
                               klass if isinstance(klass, str) else None,
                               profile if isinstance(profile, str) else None, more)
        if refused:
            raise ManifestError(source, refused[0] + hint, "mcp")


def mcp_refusals(queue: Queue, engine: str | None, engine_class: str | None,
                 profile: str | None, more: Iterable[str] = ()) -> list[str]:
    """For a job with `mcp: true`: the engines it may run on, as far as they are known before a
    worker picks one (its own, its profile's or the queue's; `more`: its escalation ladder and
    samples), that cannot take aq's MCP server, one line each. An engine class is judged when
    its attempt runs."""
    found = queue.profiles().found.get(profile) if profile else None
    if engine is None and engine_class is None and found is not None:
        engine, engine_class = found.engine, found.engine_class
    if engine is None and engine_class is None:
        engine = queue.config.default_engine
    return refusals([*([engine] if engine else []), *more], queue.config.engines)


def _check_review(queue: Queue, fields: Mapping[str, Any], source: str, hint: str) -> None:
    """The review gate's profile and engine, when the job names them: a review job made of a
    profile that is not there would wait in the inbox forever, and the job with it."""
    review = fields.get("review")
    if not isinstance(review, dict):
        return
    _need_profile(queue, review.get("profile"), "review.profile", "review", source, hint)
    _need_engine(queue, review.get("engine"), "review.engine", "review", source, hint)


def _need_engine(queue: Queue, name: object, what: str, key: str, source: str, hint: str) -> None:
    """Refuse an engine name (`what` says where it was given) that aq.yaml does not define."""
    name = _named(name)
    if isinstance(name, str) and (line := undefined_engine(queue.config, name, what)):
        raise ManifestError(source, f"{line}{hint}", key)


def _need_profile(queue: Queue, name: object, what: str, key: str, source: str, hint: str) -> None:
    """Refuse a profile name (`what` says where it was given) that profiles/ does not hold."""
    name = _named(name)
    if isinstance(name, str) and name not in (found := queue.profiles().found):
        raise ManifestError(source, f"{what} {name!r} does not exist (known: "
                            f"{', '.join(sorted(found)) or 'none'}): add profiles/{name}.md{hint}",
                            key)


def deps_exist(queue: Queue, fields: Mapping[str, Any], source: str, hint: str = ""
               ) -> Callable[[Tx], None]:
    """A guard for add_job: each of the `deps` the fields give is a job of the queue, as the tip
    it commits on holds it, or of its archive; else the job would wait for it for ever.
    `hint`: how to add it anyway."""
    given = fields.get("deps")
    named = [given] if isinstance(given, str) else given if isinstance(given, list) else []
    deps = [dep.strip() for item in named for dep in str(item).split(",") if dep.strip()]

    def guard(tx: Tx) -> None:
        for dep in deps:
            if not tx.layout.has_job(dep):
                raise ManifestError(source, f"job {dep!r} does not exist (nor in the archive): "
                                    f"the job would wait for it for ever; add it first{hint}",
                                    "deps")
    return guard


def _named(value: object) -> object:
    """A name as the manifest reads it: YAML's `engine: 7` is the name '7', not a number to
    pass over (the job would be added naming an engine that does not exist)."""
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


def _need_class(queue: Queue, fields: Mapping[str, Any], source: str, hint: str) -> None:
    """Refuse an engine-class (with no engine) that names no engines, here or in the profile."""
    klass, profile = _named(fields.get("engine-class")), _named(fields.get("profile"))
    if not isinstance(klass, str) or fields.get("engine") is not None:
        return
    found = queue.profiles().found.get(profile) if isinstance(profile, str) else None
    if unserved := unserved_class(queue.config, klass, found):
        raise ManifestError(source, f"{unserved}{hint}", "engine-class")


def _check_samples(queue: Queue, fields: Mapping[str, Any], source: str, hint: str) -> None:
    """Best of N needs engines that exist, a repo (each sample's work is a branch that can
    become the job's) and a verify (the first sample it passes wins)."""
    engines = fields.get("engines")
    names = [engines] if isinstance(engines, str) else engines if isinstance(engines, list) else []
    for name in (part.strip() for item in map(_named, names) if isinstance(item, str)
                 for part in item.split(",")):
        if name:
            _need_engine(queue, name, "engines: engine", "engines", source, hint)
    samples = fields.get("samples")
    if not (isinstance(samples, int) and samples > 1) and not names:
        return
    profile = queue.profiles().found.get(str(fields.get("profile"))) if fields.get("profile") else None
    if not (fields.get("repo") or (profile and profile.repo) or queue.config.repo):
        raise ManifestError(source, "samples: needs a repo (repo: in the job, its profile or "
                            "aq.yaml): each sample works on a branch of its own", "samples")
    if not (fields.get("verify") or (profile and profile.verify)):
        raise ManifestError(source, "samples: needs a verify: the first sample whose verify "
                            "passes wins", "samples")


def _up_front_children(queue: Queue, manifest: Manifest, parent: str, entropy: int,
                       source: str) -> list[tuple[str, str]]:
    """(id, file text) of each child a manifest declares under `children:`: a body, or the
    path of a .md file under the queue root; each gets `parent:` and a key of its own."""
    made: list[tuple[str, str]] = []
    for number, child in enumerate(manifest.children, 1):
        where = f"{source}: children[{number}]"
        text = child
        if child.strip().endswith(".md") and "\n" not in child.strip():
            try:
                text = read_file(queue.root, queue.root / child.strip()).decode("utf-8")
            except (OSError, UnicodeDecodeError, AqError) as err:
                raise UsageError(f"{where}: cannot read {child.strip()}: {err}") from None
        front, body = split_frontmatter(text, where)
        fields = {**front, "parent": parent}
        fields.setdefault("idempotency-key", child_key(parent, text))
        kid_text = render_manifest(fields, body, where)
        kid = parse_manifest("new-job", kid_text, where)
        if kid.children:
            raise UsageError(f"{where}: a child declared up front cannot declare children of its "
                             "own: let it spawn them when it runs (aq spawn)")
        made.append((new_job_id(kid.title, entropy + number), kid_text))
    return made


def _check_maker(manifest: Manifest, source: str, *, reserved: bool, spawned: bool) -> None:
    """A child is made only through aq.usecases.children, and aq's own keys only by aq."""
    if manifest.parent is not None and not spawned:
        raise ManifestError(source, "a child is added with aq add --parent JOB (or aq spawn in "
                            "its parent's attempt), which checks the parent waits for it",
                            "parent")
    if (manifest.idempotency_key or "").startswith((REVIEW_KEY, SAMPLE_KEY)) and not reserved:
        raise ManifestError(source, f"idempotency keys starting {REVIEW_KEY!r} or {SAMPLE_KEY!r} "
                            "are aq's own (its reviews and samples): choose another key",
                            "idempotency-key")


def _find_by_key(queue: Queue, key: str) -> Job | None:
    """The job an idempotency key made: in the stage folders, else in the archive (each part
    keeps its jobs' keys: one small file a part is read, not its jobs)."""
    for job in queue.snapshot().jobs:
        if job.manifest is not None and job.manifest.idempotency_key == key:
            return job
    from aq.store.snapshot import read_archived
    from aq.usecases.archive import archived_keys

    for part in reversed(queue.layout.archive_parts()):
        job_id = archived_keys(part).get(key)
        found = read_archived(queue.layout, job_id) if job_id else None
        if found is not None and found.manifest is not None \
                and found.manifest.idempotency_key == key:
            return found
    return None


def _same_key(existing: Job, manifest: Manifest) -> AddResult:
    assert existing.manifest is not None
    if content_key(existing.manifest) != content_key(manifest):
        raise IdempotencyConflict(
            f"idempotency key {manifest.idempotency_key!r} already made job {existing.id} with other "
            "content: use a new key, or leave the job as it is"
        )
    return AddResult(existing, False, f"{existing.id} already exists with this idempotency key; nothing added")


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
    children: tuple[tuple[str, str], ...] = ()  # (id, stage) of each child, oldest first


def show_job(queue: Queue, ref: str, *, now: datetime, capabilities: Capabilities) -> JobDetail:
    snapshot = queue.snapshot()
    job = queue.resolve(ref, snapshot)
    verdict = None
    if job.stage is Stage.INBOX:
        verdicts = assess_inbox(queue, snapshot, now, capabilities)
        verdict = next((v for v in verdicts if v.job.id == job.id), None)
    resolved: dict[str, Resolved] = {}
    if job.manifest is not None:
        profile = queue.profiles().found.get(job.manifest.profile) if job.manifest.profile else None
        resolved = resolve_settings(queue, job.manifest, profile)
    try:  # a job file that is a link is never read, nor one too big beyond its start: job.error says so
        text = read_regular(job.path, job_file(job), MAX_JOB_BYTES).decode("utf-8", "replace")
    except (OSError, AqError):
        text = ""
    events = tuple(read_events(job.events_path))  # an archived job's are in its archive part
    sent = 0
    owed: tuple[tuple[str, str], ...] = ()
    if job.manifest is not None and job.manifest.tracker_item:
        sent = sum(1 for event in events if event.get("type") == POSTED)
        owed = tuple((post.owner, post.since) for post in owed_posts(job, events))
    kids = tuple((kid, str(stage)) for kid, stage in family(snapshot.jobs, job.id).children)
    return JobDetail(job, events, resolved, verdict,
                     tuple(str(a) for a in allowed_actions(job.stage)), text, sent, owed, kids)


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


def job_file(job: Job) -> str:
    """The job file's path as a person reads it in a problem: `queue/<stage>/<id>.md`."""
    if job.archived:  # queue/.archive/<yyyy>/<mm>/<nnn>/<stage>/<id>.md
        return "/".join((QUEUE_DIR, *job.folder.parts[-5:], f"{job.id}.md"))
    return f"{QUEUE_DIR}/{job.stage}/{job.id}.md"
