"""Picking (DESIGN §4): which inbox job a worker takes, and why every other one waits."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aq.core.events import JobState, iso, parse_iso
from aq.core.lifecycle import Stage
from aq.core.manifest import Manifest
from aq.core.scheduler import JobView, Verdict, assess, dependency_cycles, pick
from tests.helpers.queue import T0

PRIORITY_ORDER = ["critical", "high", "medium", "low"]
KINDS = {"invalid", "cycle", "dep", "lock", "not_before", "capability", "halted"}


def job(
    job_id: str,
    stage: Stage = Stage.INBOX,
    *,
    priority: str = "medium",
    deps: tuple[str, ...] = (),
    lock: str | None = None,
    caps: tuple[str, ...] = (),
    not_before: datetime | None = None,
    added: datetime = T0,
    valid: bool = True,
) -> JobView:
    manifest = Manifest(id=job_id, title=job_id, body="do it", priority=priority, deps=deps,
                        lock=lock, capabilities=caps) if valid else None
    state = JobState(not_before=iso(not_before) if not_before else None)
    return JobView(id=job_id, stage=stage, manifest=manifest, state=state, added=added,
                   error=None if valid else "key 'priority': 'urgent' is not a priority")


def verdicts_by_id(jobs: list[JobView], **options: object) -> dict[str, Verdict]:
    return {verdict.job.id: verdict for verdict in assess(jobs, T0, **options)}  # type: ignore[arg-type]


# --- examples ----------------------------------------------------------------------------------


def test_priority_comes_first() -> None:
    """A high-priority job is taken before an older medium one."""
    jobs = [job("old", added=T0 - timedelta(days=1)), job("urgent", priority="high")]
    assert pick(jobs, T0) is jobs[1]


def test_then_age_then_id() -> None:
    """Among equal priorities the oldest is taken first, and among equal ages the lowest id."""
    jobs = [job("b", added=T0), job("c", added=T0 - timedelta(minutes=1)), job("a", added=T0)]
    assert [verdict.job.id for verdict in assess(jobs, T0)] == ["c", "a", "b"]
    assert pick(jobs, T0) is jobs[1]


def test_only_inbox_jobs_are_assessed() -> None:
    """Jobs in other stages are never candidates."""
    jobs = [job(f"in-{stage}", stage) for stage in Stage]
    assert [verdict.job.id for verdict in assess(jobs, T0)] == ["in-inbox"]


def test_unmet_dep_blocks_with_its_stage() -> None:
    """A job whose dep is still building waits, naming the dep and its stage."""
    verdicts = verdicts_by_id([job("setup", Stage.BUILDING), job("use", deps=("setup",))])
    assert (verdicts["use"].kind, verdicts["use"].reason) == ("dep", "waits for dep setup (building)")


@pytest.mark.parametrize("stage", [Stage.TESTING, Stage.SHIPPED])
def test_dep_in_testing_or_shipped_is_met(stage: Stage) -> None:
    """A dep in testing or shipped no longer blocks."""
    assert verdicts_by_id([job("setup", stage), job("use", deps=("setup",))])["use"].ready


@pytest.mark.parametrize("stage", [Stage.INBOX, Stage.BUILDING, Stage.REVIEW, Stage.FAILED, Stage.DEAD_LETTER])
def test_dep_elsewhere_is_not_met(stage: Stage) -> None:
    """A dep in inbox, building, review, failed or dead_letter still blocks."""
    assert verdicts_by_id([job("setup", stage), job("use", deps=("setup",))])["use"].kind == "dep"


def test_missing_dep_is_the_block_reason() -> None:
    """A dep that does not exist is shown as the block reason."""
    verdict = verdicts_by_id([job("use", deps=("ghost",))])["use"]
    assert (verdict.kind, verdict.reason) == ("dep", "dep ghost does not exist")


def test_cycle_is_the_block_reason() -> None:
    """Jobs on a dependency cycle are blocked with the cycle shown."""
    verdicts = verdicts_by_id([job("a", deps=("b",)), job("b", deps=("a",)), job("c", deps=("a",))])
    assert (verdicts["a"].kind, verdicts["a"].reason) == ("cycle", "dependency cycle: a -> b -> a")
    assert verdicts["b"].kind == "cycle"
    assert (verdicts["c"].kind, verdicts["c"].reason) == ("dep", "waits for dep a (inbox)")


def test_lock_held_by_a_building_job_blocks() -> None:
    """A job whose lock a building job holds waits, naming the lock and the holder."""
    jobs = [job("migrate", Stage.BUILDING, lock="db"), job("seed", lock="db"), job("docs", priority="low")]
    verdicts = verdicts_by_id(jobs)
    assert (verdicts["seed"].kind, verdicts["seed"].reason) == ("lock", "lock 'db' is held by migrate")
    assert pick(jobs, T0) is jobs[2]


def test_lock_of_a_job_in_review_does_not_block() -> None:
    """Only building jobs hold locks."""
    assert verdicts_by_id([job("migrate", Stage.REVIEW, lock="db"), job("seed", lock="db")])["seed"].ready


def test_held_locks_block_like_building_jobs() -> None:
    """Locks passed in as held (claimed earlier in the same pass) block jobs with that lock."""
    jobs = [job("seed", lock="db"), job("docs", priority="low")]
    verdict = verdicts_by_id(jobs, held_locks={"db": "migrate"})["seed"]
    assert (verdict.kind, verdict.reason) == ("lock", "lock 'db' is held by migrate")
    assert pick(jobs, T0, held_locks={"db": "migrate"}) is jobs[1]
    assert pick(jobs, T0, held_locks={"other": "x"}) is jobs[0]


def test_not_before_in_the_future_blocks() -> None:
    """A job waiting out its retry backoff is not taken before its time, and is at and after it."""
    later = job("later", not_before=T0 + timedelta(seconds=90))
    verdict = verdicts_by_id([later])["later"]
    assert verdict.kind == "not_before"
    assert verdict.reason == f"retry not before {iso(T0 + timedelta(seconds=90))} (in 90s)"
    assert verdicts_by_id([job("now", not_before=T0)])["now"].ready
    assert verdicts_by_id([job("past", not_before=T0 - timedelta(hours=1))])["past"].ready


def test_a_retry_wait_measured_by_the_worker_overrides_the_wall_clock() -> None:
    """Given how long each retry still waits on the worker's own clock, the scheduler uses that
    and not the not-before time another machine's wall clock stamped."""
    stamped_fast = job("fast", not_before=T0 + timedelta(hours=1))
    stamped_slow = job("slow", not_before=T0 - timedelta(hours=1))
    verdicts = verdicts_by_id([stamped_fast, stamped_slow], retry_waits={"fast": 0.0, "slow": 30.0})
    assert verdicts["fast"].ready
    assert verdicts["slow"].kind == "not_before"
    assert verdicts["slow"].reason == "retry waits its backoff (30s more)"


def test_missing_capability_blocks_naming_it() -> None:
    """A job needing a capability the worker lacks waits, naming the missing capability."""
    jobs = [job("train", caps=("gpu", "os:linux"))]
    verdict = verdicts_by_id(jobs, worker_caps=frozenset({"os:linux"}))["train"]
    assert (verdict.kind, verdict.reason) == ("capability", "needs capability gpu that this worker lacks")
    assert verdicts_by_id(jobs, worker_caps=frozenset({"os:linux", "gpu", "has:docker"}))["train"].ready


def test_no_worker_capabilities_means_no_check() -> None:
    """When the worker's capabilities are not given, capabilities are not checked."""
    assert verdicts_by_id([job("train", caps=("gpu",))], worker_caps=None)["train"].ready


def test_halted_queue_picks_nothing() -> None:
    """With the kill switch on nothing is picked, and ready jobs say the queue is halted."""
    jobs = [job("a"), job("b")]
    assert pick(jobs, T0, halted="HALT: deploy freeze") is None
    verdict = verdicts_by_id(jobs, halted="HALT: deploy freeze")["a"]
    assert (verdict.kind, verdict.reason) == ("halted", "queue halted: HALT: deploy freeze")


def test_invalid_manifest_is_skipped_with_its_error() -> None:
    """An inbox file whose manifest is invalid is never picked; its verdict carries the error."""
    jobs = [job("broken", priority="critical", valid=False), job("fine", priority="low")]
    verdict = verdicts_by_id(jobs)["broken"]
    assert verdict.kind == "invalid"
    assert verdict.reason == "invalid manifest: key 'priority': 'urgent' is not a priority"
    assert pick(jobs, T0) is jobs[1]


def test_nothing_to_pick() -> None:
    """An empty queue, or one whose inbox is all blocked, gives no pick."""
    assert pick([], T0) is None
    assert pick([job("use", deps=("ghost",))], T0) is None


# --- properties --------------------------------------------------------------------------------


@dataclass
class Queue:
    jobs: list[JobView]
    halted: str | None
    worker_caps: frozenset[str] | None
    held_locks: dict[str, str]


CAPS = ["gpu", "os:linux", "has:docker"]
LOCKS = ["db", "repo"]


@st.composite
def queues(draw: st.DrawFn) -> Queue:
    count = draw(st.integers(1, 10))
    ids = [f"j{n}" for n in range(count)]
    jobs = []
    for job_id in ids:
        others = [other for other in ids if other != job_id] + ["ghost", "gone"]
        offset = draw(st.one_of(st.none(), st.integers(-120, 120)))
        jobs.append(job(
            job_id,
            draw(st.sampled_from([Stage.INBOX] * 4 + list(Stage))),
            priority=draw(st.sampled_from(PRIORITY_ORDER)),
            deps=tuple(draw(st.lists(st.sampled_from(others), max_size=3, unique=True))),
            lock=draw(st.sampled_from([None, None, *LOCKS])),
            caps=tuple(draw(st.lists(st.sampled_from(CAPS), max_size=2, unique=True))),
            not_before=None if offset is None else T0 + timedelta(seconds=offset),
            added=T0 - timedelta(minutes=draw(st.integers(0, 3))),
            valid=draw(st.integers(0, 9)) > 0,
        ))
    return Queue(
        jobs=jobs,
        halted=draw(st.sampled_from([None, None, None, "HALT present"])),
        worker_caps=draw(st.one_of(st.none(), st.frozensets(st.sampled_from(CAPS)))),
        held_locks=draw(st.sampled_from([{}, {}, {"repo": "elsewhere"}])),
    )


def reachable(graph: dict[str, tuple[str, ...]], start: str) -> set[str]:
    """Every job reachable from `start` by one or more dep edges (brute force)."""
    seen: set[str] = set()
    todo = [dep for dep in graph[start] if dep in graph]
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(dep for dep in graph[node] if dep in graph)
    return seen


def on_cycles(jobs: list[JobView]) -> set[str]:
    graph = {j.id: j.manifest.deps for j in jobs if j.manifest is not None}
    return {job_id for job_id in graph if job_id in reachable(graph, job_id)}


def why_not_ready(candidate: JobView, queue: Queue) -> set[str]:
    """Every DESIGN §4 rule the inbox job breaks, worked out independently of the scheduler."""
    manifest = candidate.manifest
    if manifest is None:
        return {"invalid"}
    stages = {j.id: j.stage for j in queue.jobs}
    held = {j.manifest.lock for j in queue.jobs
            if j.stage is Stage.BUILDING and j.manifest is not None and j.manifest.lock}
    held |= set(queue.held_locks)
    broken = set()
    if candidate.id in on_cycles(queue.jobs):
        broken.add("cycle")
    if any(stages.get(dep) not in (Stage.TESTING, Stage.SHIPPED) for dep in manifest.deps):
        broken.add("dep")
    if manifest.lock in held:
        broken.add("lock")
    if candidate.state.not_before is not None and parse_iso(candidate.state.not_before) > T0:
        broken.add("not_before")
    if queue.worker_caps is not None and not set(manifest.capabilities) <= queue.worker_caps:
        broken.add("capability")
    if queue.halted is not None:
        broken.add("halted")
    return broken


def order_key(candidate: JobView) -> tuple[int, datetime, str]:
    rank = PRIORITY_ORDER.index(candidate.manifest.priority) if candidate.manifest else len(PRIORITY_ORDER)
    return (rank, candidate.added, candidate.id)


def run(queue: Queue) -> tuple[list[Verdict], JobView | None]:
    options = {"halted": queue.halted, "worker_caps": queue.worker_caps, "held_locks": queue.held_locks}
    return assess(queue.jobs, T0, **options), pick(queue.jobs, T0, **options)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(queues())
def test_a_picked_job_meets_every_rule(queue: Queue) -> None:
    """A picked job is in the inbox, its deps are done, its lock free, its time come, its capabilities met."""
    _, picked = run(queue)
    if picked is None:
        return
    stages = {j.id: j.stage for j in queue.jobs}
    assert queue.halted is None
    assert picked.stage is Stage.INBOX
    assert picked.manifest is not None
    assert all(stages.get(dep) in (Stage.TESTING, Stage.SHIPPED) for dep in picked.manifest.deps)
    building_locks = {j.manifest.lock for j in queue.jobs if j.stage is Stage.BUILDING and j.manifest}
    assert picked.manifest.lock is None or picked.manifest.lock not in building_locks | set(queue.held_locks)
    assert picked.state.not_before is None or parse_iso(picked.state.not_before) <= T0
    assert queue.worker_caps is None or set(picked.manifest.capabilities) <= queue.worker_caps
    assert picked.id not in on_cycles(queue.jobs)


@settings(max_examples=200, deadline=None)
@given(queues())
def test_the_pick_is_the_first_ready_job_in_order(queue: Queue) -> None:
    """The pick is the minimum by (priority, age, id) among the jobs that break no rule; none when halted."""
    _, picked = run(queue)
    ready = [j for j in queue.jobs if j.stage is Stage.INBOX and not why_not_ready(j, queue)]
    expected = min(ready, key=order_key) if ready else None
    assert picked is expected
    if queue.halted is not None:
        assert picked is None


@settings(max_examples=200, deadline=None)
@given(queues())
def test_every_inbox_job_gets_a_true_verdict(queue: Queue) -> None:
    """Each inbox job gets one verdict, in pick order; a blocked one gets a reason and a kind that is true of it."""
    verdicts, _ = run(queue)
    inbox = [j for j in queue.jobs if j.stage is Stage.INBOX]
    assert [v.job.id for v in verdicts] == [j.id for j in sorted(inbox, key=order_key)]
    for verdict in verdicts:
        broken = why_not_ready(verdict.job, queue)
        assert verdict.ready == (not broken)
        if broken:
            assert verdict.kind in KINDS
            assert verdict.kind in broken
            assert verdict.reason
        else:
            assert (verdict.kind, verdict.reason) == (None, None)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 9).flatmap(lambda n: st.lists(
    st.lists(st.sampled_from([f"j{i}" for i in range(n)] + ["ghost"]), max_size=3, unique=True),
    min_size=n, max_size=n)))
def test_dependency_cycles_finds_exactly_the_jobs_on_cycles(dep_lists: list[list[str]]) -> None:
    """dependency_cycles reports exactly the jobs that can reach themselves, each with its whole cycle."""
    graph = {f"j{i}": tuple(dep for dep in deps if dep != f"j{i}") for i, deps in enumerate(dep_lists)}
    manifests = {job_id: Manifest(id=job_id, title=job_id, body="x", deps=deps) for job_id, deps in graph.items()}
    cycles = dependency_cycles(manifests)
    expected = {job_id for job_id in graph if job_id in reachable(graph, job_id)}
    assert set(cycles) == expected
    for job_id, members in cycles.items():
        assert members == sorted(members)
        assert job_id in members
        strongly_connected = {m for m in expected if m == job_id or (
            m in reachable(graph, job_id) and job_id in reachable(graph, m))}
        assert set(members) == strongly_connected
