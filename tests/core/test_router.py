"""The router (aq.core.router, README "Picking"): among the jobs `assess` finds ready, priority
first, then a score (fit, warm checkout, starving, fairness across repositories, cost fit), then
age, then a seeded tie, then the id.

Scenarios are a table: the jobs of a queue (its history too: claims and costs are read from the
attempts of its other jobs), what the worker is, and which job it takes. Properties: the order is
a function of the inputs (the jobs in any order give the same one), priority is never
overridden, and a job that waited long enough is taken before any fresh one. The end-to-end tests
run real `aq` processes: `aq next --explain` prints the breakdown and the claim records it.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aq.core.events import Attempt, JobState, iso
from aq.core.lifecycle import Stage
from aq.core.manifest import parse_manifest, render_manifest
from aq.core.profile import Profile, parse_profile
from aq.core.router import (
    COST,
    FAIR,
    LOAD,
    MOST_AHEAD,
    STARVE_AFTER,
    STARVE_PER_MINUTE,
    WARM,
    Ranked,
    Signals,
    engine_costs,
    rank,
    recent_claims,
    running_now,
)
from aq.core.scheduler import JobView, Routing, assess
from aq.infra.repocache import ensure_cache, resolve_repo
from aq.store.queue import Queue
from tests.helpers.cli import Ran
from tests.helpers.git import project_repo
from tests.helpers.queue import T0, write_job

Aq = Callable[..., Ran]
LINUX = frozenset({"os:linux", "has:git", "engine:shell", "engine:claude"})
CLASSES = {"coding-agent": ("claude", "codex", "aider")}
SCORE_KEYS = {"total", "fit", "warm", "starving", "fair", "load", "cost"}


def job(job_id: str, *, age: float = 0, stage: Stage = Stage.INBOX,
        claims: tuple[float, ...] = (), costs: tuple[tuple[str, float], ...] = (),
        not_before: float | None = None, **keys: object) -> JobView:
    """A job added `age` minutes before T0, its manifest from these frontmatter keys (`_` spelled
    `-`); `claims`: its attempts' claim times, in minutes before T0; `costs`: (engine, USD) of
    finished attempts; `not_before`: minutes before T0 its retry became ready."""
    fields = {key.replace("_", "-"): value for key, value in keys.items()}
    manifest = parse_manifest(job_id, render_manifest(fields, f"do {job_id}"), f"{job_id}.md")
    attempts = [Attempt(n + 1, "w", f"{n + 1}.w.aa", iso(T0 - timedelta(minutes=m)))
                for n, m in enumerate(claims)]
    attempts += [Attempt(len(attempts) + n + 1, "w", "t", iso(T0 - timedelta(hours=3)),
                         outcome="ok", engine=engine, usage={"cost_usd": usd})
                 for n, (engine, usd) in enumerate(costs)]
    state = JobState(attempts=tuple(attempts),
                     not_before=iso(T0 - timedelta(minutes=not_before)) if not_before is not None
                     else None)
    return JobView(job_id, stage, manifest, state, T0 - timedelta(minutes=age))


def profile(name: str, **keys: object) -> Profile:
    import yaml

    front = {key.replace("_", "-"): value for key, value in keys.items()}
    text = f"---\n{yaml.safe_dump({'name': name, **front}, sort_keys=False)}---\nYou are {name}.\n"
    return parse_profile(name, text, f"profiles/{name}.md")


@dataclass(frozen=True)
class Scenario:
    name: str
    jobs: tuple[JobView, ...]
    takes: str | None  # the job the worker takes first
    worker: str = "w1"
    caps: frozenset[str] | None = LINUX
    warm: frozenset[str] = frozenset()
    profiles: dict[str, Profile] = field(default_factory=dict)
    default_repo: str | None = None
    seed: str | None = None


def ranking(s: Scenario) -> list[Ranked]:
    """What a worker decides: `assess` for what is ready, then the router over it, told what
    this machine and the queue's history say."""
    routing = Routing(s.profiles, CLASSES, s.worker, 120.0)
    verdicts = assess(list(s.jobs), T0, worker_caps=s.caps, routing=routing)
    signals = Signals(warm=s.warm, claims=recent_claims(s.jobs, T0, default_repo=s.default_repo,
                                                        profiles=s.profiles),
                      running=running_now([j for j in s.jobs if j.stage is Stage.BUILDING],
                                          default_repo=s.default_repo, profiles=s.profiles),
                      engine_costs=engine_costs(s.jobs), default_repo=s.default_repo,
                      default_engine="shell", seed=s.seed)
    return rank([v.job for v in verdicts if v.ready], T0, signals, routing, s.caps)


SCENARIOS = [
    Scenario("with nothing to tell them apart, the oldest goes first",
             (job("newer", age=1), job("older", age=2)), "older"),
    Scenario("priority comes first, whatever the score",
             (job("warm-starving-fair", age=500, repo="a"), job("fresh-high", priority="high")),
             "fresh-high", warm=frozenset({"a"})),
    Scenario("a capability miss is never taken, however it scores",
             (job("needs-docker", age=5, repo="a", capabilities=["has:docker"]),
              job("plain", age=1)), "plain", warm=frozenset({"a"})),
    Scenario("an engine class with no engine here is a capability miss",
             (job("coder", age=5, engine_class="coding-agent"), job("plain", age=1)), "plain",
             caps=frozenset({"os:linux", "engine:shell"})),
    Scenario("a warm checkout wins a tie of priority over an older cold one",
             (job("cold", age=5, repo="a"), job("warm", age=1, repo="b")), "warm",
             warm=frozenset({"b"})),
    Scenario("the queue's repo counts for jobs that name none",
             (job("elsewhere", age=5, repo="b"), job("default", age=1)), "default",
             warm=frozenset({"main-repo"}), default_repo="main-repo"),
    Scenario("a profile's repo counts as the job's",
             (job("cold", age=5, repo="b"), job("profiled", age=1, profile="dev")), "profiled",
             warm=frozenset({"a"}), profiles={"dev": profile("dev", repo="a")}),
    Scenario("a job starving past the threshold beats a newer warm one",
             (job("old-cold", age=30, repo="a"), job("new-warm", age=1, repo="b")), "old-cold",
             warm=frozenset({"b"})),
    Scenario("short of that, the warm one still goes first",
             (job("old-cold", age=20, repo="a"), job("new-warm", age=1, repo="b")), "new-warm",
             warm=frozenset({"b"})),
    Scenario("a retry starves from its not-before time, not from when it was added",
             (job("retried", age=600, not_before=1, repo="a"), job("new-warm", age=1, repo="b")),
             "new-warm", warm=frozenset({"b"})),
    Scenario("a repo that got many claims yields to one that got none",
             (job("busy", age=5, repo="a"), job("quiet", age=1, repo="b"),
              job("done-1", stage=Stage.SHIPPED, repo="a", claims=(10, 20)),
              job("done-2", stage=Stage.BUILDING, repo="a", claims=(5,))), "quiet"),
    Scenario("claims older than the fairness window do not count",
             (job("busy-long-ago", age=5, repo="a"), job("quiet", age=1, repo="b"),
              job("done", stage=Stage.SHIPPED, repo="a", claims=(90, 120))), "busy-long-ago"),
    Scenario("a repo with jobs running now yields to one with none running",
             (job("loaded", age=5, repo="a"), job("idle", age=1, repo="b"),
              job("running-1", stage=Stage.BUILDING, repo="a", claims=(90,)),
              job("running-2", stage=Stage.BUILDING, repo="a", claims=(100,))), "idle"),
    Scenario("... but a warm checkout outweighs what runs now",
             (job("loaded-warm", age=5, repo="a"), job("idle-cold", age=1, repo="b"),
              job("running", stage=Stage.BUILDING, repo="a", claims=(90,))), "loaded-warm",
             warm=frozenset({"a"})),
    Scenario("jobs that ran and are done are no load",
             (job("older", age=5, repo="a"), job("newer", age=1, repo="b"),
              job("ran", stage=Stage.SHIPPED, repo="a", claims=(90,))), "older"),
    Scenario("a tracker project is a fairness group of its own",
             (job("gh-busy", age=5, tracker_item="github:o/api#1"),
              job("gh-quiet", age=1, tracker_item="github:o/web#2"),
              job("done", stage=Stage.SHIPPED, tracker_item="github:o/api#7", claims=(3,))),
             "gh-quiet"),
    Scenario("a budget that fits the engine's typical cost goes first",
             (job("no-budget", age=5), job("fits", age=1, engine="claude", budget={"usd": 5}),
              job("history", stage=Stage.SHIPPED, costs=(("claude", 1.0), ("claude", 2.0)))),
             "fits"),
    Scenario("a budget the engine typically overruns goes after",
             (job("overruns", age=5, engine="claude", budget={"usd": 0.5}), job("no-budget", age=1),
              job("history", stage=Stage.SHIPPED, costs=(("claude", 1.0), ("claude", 3.0)))),
             "no-budget"),
    Scenario("a budget on an engine of unknown cost is no signal",
             (job("older", age=5, engine="claude", budget={"usd": 0.01}), job("newer", age=1)),
             "older"),
    Scenario("a job that prefers this worker goes first once its window is open to all",
             (job("plain", age=10), job("mine", age=5, prefers=["factory:w1"])), "mine"),
    Scenario("... but not for another worker, which takes the older one",
             (job("plain", age=10), job("mine", age=5, prefers=["factory:w1"])), "plain",
             worker="w2"),
    Scenario("an engine-class job that would run on the class's fallback here waits its turn",
             (job("coder", age=5, engine_class="coding-agent"), job("plain", age=1)), "plain",
             caps=frozenset({"os:linux", "engine:shell", "engine:aider"})),
    Scenario("... and on the class's first choice it keeps its age",
             (job("coder", age=5, engine_class="coding-agent"), job("plain", age=1)), "coder"),
    Scenario("nothing ready, nothing taken",
             (job("blocked", deps=["ghost"]),), None),
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_scenario(scenario: Scenario) -> None:
    """Each scenario's worker takes the job the table names."""
    ranked = ranking(scenario)
    assert (ranked[0].job.id if ranked else None) == scenario.takes, [
        (r.job.id, r.score.said()) for r in ranked]


def test_the_breakdown_names_each_part() -> None:
    """A warm job of a quiet repo, starving for 15 minutes, scores warm + fair + starving."""
    ranked = ranking(Scenario("", (job("it", age=25, repo="b"), job("other", age=1, repo="a"),
                                   job("done", stage=Stage.SHIPPED, repo="a", claims=(1,))),
                              "it", warm=frozenset({"b"})))
    score = ranked[0].score
    assert score.breakdown() == {"total": WARM + FAIR + 30, "fit": 0, "warm": WARM,
                                 "starving": 30.0, "fair": FAIR, "load": 0, "cost": 0}
    assert score.said() == "score 70: warm 30, starving 30, fair 10"
    assert ranked[1].score.said() == "score 0"


def test_a_seed_breaks_exact_ties_only() -> None:
    """Jobs added at the same moment with the same score: by id without a seed; with one, in an
    order that depends on the seed, always the same for that seed; never before an older job."""
    tied = [job(f"j{n}") for n in range(6)]
    older = job("older", age=1)

    def order(seed: str | None) -> list[str]:
        signals = Signals(seed=seed)
        return [r.job.id for r in rank([*tied, older], T0, signals)]

    assert order(None) == ["older", *(j.id for j in tied)]
    firsts = {order(f"worker-{n}")[1] for n in range(20)}
    assert len(firsts) > 1  # different workers start on different jobs of a batch
    assert all(order(f"worker-{n}")[0] == "older" for n in range(20))
    assert order("worker-3") == order("worker-3")


def test_load_is_the_share_of_the_most_loaded_groups_running_jobs() -> None:
    """A group with none running gets all of LOAD, the most loaded none, one between its share;
    jobs outside the building stage are not running."""
    jobs = (job("a1", stage=Stage.BUILDING, repo="a"), job("a2", stage=Stage.BUILDING, repo="a"),
            job("b1", stage=Stage.BUILDING, repo="b"), job("c-done", stage=Stage.SHIPPED, repo="c"),
            job("q", stage=Stage.BUILDING))
    running = running_now([j for j in jobs if j.stage is Stage.BUILDING])
    assert running == {"a": 2, "b": 1, "": 1}
    ready = [job("in-a", repo="a"), job("in-b", repo="b"), job("in-c", repo="c")]
    loads = {r.job.id: r.score.load for r in rank(ready, T0, Signals(running=running))}
    assert loads == {"in-a": 0.0, "in-b": LOAD / 2, "in-c": LOAD}


def test_fairness_counts_claims_per_group_in_the_window() -> None:
    """recent_claims counts each attempt claimed in the last hour, by repo; engine_costs is the
    median cost per engine."""
    jobs = [job("a1", repo="a", claims=(1, 2, 70)), job("b1", repo="b", claims=(59,)),
            job("none", claims=(3,)), job("c", costs=(("claude", 1), ("claude", 3), ("claude", 10)))]
    assert recent_claims(jobs, T0) == {"a": 2, "b": 1, "": 1}
    assert engine_costs(jobs) == {"claude": 3.0}


# --- properties ----------------------------------------------------------------------------------

REPOS = ["a", "b", "c"]


@st.composite
def candidates(draw: st.DrawFn) -> tuple[list[JobView], Signals, frozenset[str]]:
    """Ready jobs of every kind the score reads, and what the machine knows."""
    count = draw(st.integers(1, 8))
    jobs = []
    for n in range(count):
        keys: dict[str, Any] = {"priority": draw(st.sampled_from(["high", "medium", "low"]))}
        if repo := draw(st.sampled_from([None, *REPOS])):
            keys["repo"] = repo
        if draw(st.booleans()):
            keys["budget"] = {"usd": draw(st.sampled_from([0.5, 2, 10]))}
            keys["engine"] = draw(st.sampled_from(["claude", "codex"]))
        elif draw(st.booleans()):
            keys["engine_class"] = "coding-agent"
        if draw(st.booleans()):
            keys["prefers"] = [draw(st.sampled_from(["factory:w1", "factory:w2", "engine:codex"]))]
        jobs.append(job(f"j{n}", age=draw(st.sampled_from([0, 0, 1, 5, 15, 30, 61, 120, 600])),
                        **keys))
    signals = Signals(
        warm=frozenset(draw(st.lists(st.sampled_from(REPOS), unique=True))),
        claims=draw(st.dictionaries(st.sampled_from(["", *REPOS]), st.integers(0, 9))),
        engine_costs=draw(st.dictionaries(st.sampled_from(["claude", "codex"]),
                                          st.sampled_from([0.1, 1.0, 5.0]))),
        seed=draw(st.sampled_from([None, "w1", "w2"])))
    caps = frozenset(draw(st.lists(st.sampled_from(["engine:claude", "engine:codex",
                                                    "engine:aider"]), unique=True)))
    return jobs, signals, caps


def ordered(jobs: list[JobView], signals: Signals, caps: frozenset[str]) -> list[Ranked]:
    return rank(jobs, T0, signals, Routing({}, CLASSES, "w1"), caps)


@settings(max_examples=200, deadline=None)
@given(candidates(), st.randoms(use_true_random=False))
def test_the_order_is_a_function_of_the_inputs(drawn: tuple[list[JobView], Signals,
                                                            frozenset[str]], rnd: Any) -> None:
    """The same jobs in any order, with the same signals, give the same order and scores."""
    jobs, signals, caps = drawn
    shuffled = list(jobs)
    rnd.shuffle(shuffled)
    first, second = ordered(jobs, signals, caps), ordered(shuffled, signals, caps)
    assert [(r.job.id, r.score) for r in first] == [(r.job.id, r.score) for r in second]
    assert sorted(r.job.id for r in first) == sorted(j.id for j in jobs)


@settings(max_examples=200, deadline=None)
@given(candidates())
def test_priority_is_never_overridden(drawn: tuple[list[JobView], Signals, frozenset[str]]) -> None:
    """However the scores fall, no job goes before one of a higher priority."""
    ranks = [r.job.manifest.priority_rank for r in ordered(*drawn) if r.job.manifest]
    assert ranks == sorted(ranks)


@settings(max_examples=200, deadline=None)
@given(candidates())
def test_a_job_that_waited_long_enough_goes_before_every_fresh_one(
        drawn: tuple[list[JobView], Signals, frozenset[str]]) -> None:
    """A job ready for STARVE_AFTER plus MOST_AHEAD points' worth of minutes goes before every
    job of its priority ready for less than STARVE_AFTER: no bonus holds it back for ever."""
    ranked = ordered(*drawn)
    long_enough = timedelta(seconds=STARVE_AFTER, minutes=MOST_AHEAD / STARVE_PER_MINUTE)
    place = {r.job.id: n for n, r in enumerate(ranked)}
    for old in ranked:
        for fresh in ranked:
            assert old.job.manifest and fresh.job.manifest
            if (old.job.manifest.priority == fresh.job.manifest.priority
                    and T0 - old.job.added >= long_enough
                    and T0 - fresh.job.added < timedelta(seconds=STARVE_AFTER)):
                assert place[old.job.id] < place[fresh.job.id], (old.score, fresh.score)


def test_the_cost_part_is_signed() -> None:
    """A budget that fits adds COST, one the engine typically overruns takes it off."""
    costs = Signals(engine_costs={"claude": 1.0})
    fits, overruns = (rank([job("j", engine="claude", budget={"usd": usd})], T0, costs)[0].score.cost
                      for usd in (1, 0.99))
    assert (fits, overruns) == (COST, -COST)


# --- end to end ----------------------------------------------------------------------------------


def _aged(path: Path, minutes: float) -> None:
    """A job file written by hand has no `added` event: its age is the file's time."""
    then = time.time() - minutes * 60
    os.utime(path, (then, then))


def test_next_explain_prints_the_breakdown_and_the_claim_records_it(aq: Aq, queue_root: Path
                                                                     ) -> None:
    """`aq next --explain` shows each ready job's score (a job waiting an hour is starving) and
    `aq run --once` takes that job with the same breakdown in its `claimed` event."""
    _aged(write_job(queue_root, "waited", title="Waited"), 60)
    _aged(write_job(queue_root, "fresh", title="Fresh"), 1)
    write_job(queue_root, "urgent-but-blocked", priority="high", deps=["ghost"])
    out = aq("next", "--explain").stdout
    assert out.splitlines()[0].startswith("waited")
    assert re.search(r"^  take  waited: first in order \(priority, score, age, id\): medium, "
                     r"score [\d.]+: starving [\d.]+$", out, re.M), out
    assert re.search(r"^  later fresh: ready, but after waited in order: medium, score 0$", out,
                     re.M), out
    assert "  skip  urgent-but-blocked: dep ghost does not exist" in out
    shown = json.loads(aq("next", "--json").stdout)
    assert set(shown["score"]) == SCORE_KEYS and shown["score"]["starving"] > 90
    assert [c["id"] for c in shown["candidates"]] == ["waited", "fresh"]

    assert aq("run", "--once", timeout=60).returncode == 0
    events = [json.loads(line) for line in
              (queue_root / "queue" / ".events" / "waited.jsonl").read_text().splitlines()]
    (claim,) = [e for e in events if e["type"] == "claimed"]
    assert set(claim["score"]) == SCORE_KEYS
    assert claim["score"]["starving"] >= shown["score"]["starving"] > 0
    assert claim["score"]["total"] == claim["score"]["starving"]


def test_a_warm_checkout_on_this_machine_is_seen(aq: Aq, queue_root: Path, tmp_path: Path) -> None:
    """A repo whose cache this machine holds (as a worker's first job of it leaves it) makes its
    newer job go before an older one of a repo never fetched here."""
    warm, cold = project_repo(tmp_path, "warm"), project_repo(tmp_path, "cold")
    config = queue_root / "aq.yaml"
    config.write_text(config.read_text() + f"\nworkspaces_dir: {tmp_path / 'ws'}\n")
    queue = Queue(queue_root)
    ensure_cache(resolve_repo(str(warm), queue_root),
                 queue.config.workspaces_root(queue.workspace_key))
    _aged(write_job(queue_root, "cold-job", repo=str(cold)), 5)
    _aged(write_job(queue_root, "warm-job", repo=str(warm)), 1)
    shown = json.loads(aq("next", "--json").stdout)
    assert shown["next"]["id"] == "warm-job"
    assert shown["score"]["warm"] == WARM
    assert [(c["id"], c["score"]["warm"]) for c in shown["candidates"]] == [
        ("warm-job", WARM), ("cold-job", 0)]


def test_next_scores_the_load_of_what_runs_now(aq: Aq, queue_root: Path) -> None:
    """`aq next` counts the building jobs of each repository: the job of the repository with
    none running goes before an older one whose repository has two."""
    for running in ("run-1", "run-2"):
        write_job(queue_root, running, stage="building", repo="api")
    _aged(write_job(queue_root, "older", repo="api"), 5)
    _aged(write_job(queue_root, "newer", repo="web"), 1)
    shown = json.loads(aq("next", "--json").stdout)
    assert [c["id"] for c in shown["candidates"]] == ["newer", "older"]
    assert shown["score"]["load"] == LOAD
    assert [c["score"]["load"] for c in shown["candidates"]] == [LOAD, 0]
