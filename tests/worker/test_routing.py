"""Routing (DESIGN §4, README "Picking"): which worker may take a job, given its capabilities,
its profile, its engine class and its preferences.

Most scenarios are pure: `assess` is handed the jobs, the worker's capabilities, a `Routing` and
`now`. The last ones run real `aq` processes: one worker resolving an engine class, and a fleet
of two clones whose workers differ in capabilities.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from aq.core.events import JobState, iso
from aq.core.lifecycle import Stage
from aq.core.manifest import parse_manifest, render_manifest
from aq.core.profile import Profile, apply_profile, choose_engine, parse_profile
from aq.core.scheduler import JobView, Routing, Verdict, assess, pick
from tests.helpers.cli import Ran, run_aq
from tests.helpers.fleet import fleet_in, ledger_rows
from tests.helpers.queue import T0, events, write_job

LINUX = frozenset({"os:linux", "arch:x86_64", "has:git", "engine:shell"})
CLASSES = {"coding-agent": ("claude", "codex", "aider")}


def job(job_id: str, *, added: datetime = T0, not_before: datetime | None = None,
        **keys: object) -> JobView:
    """An inbox job whose manifest is parsed from these frontmatter keys (`_` spelled `-`)."""
    fields = {key.replace("_", "-"): value for key, value in keys.items()}
    manifest = parse_manifest(job_id, render_manifest(fields, f"do {job_id}"), f"{job_id}.md")
    state = JobState(not_before=iso(not_before) if not_before else None)
    return JobView(id=job_id, stage=Stage.INBOX, manifest=manifest, state=state, added=added)


def profile(name: str, **keys: object) -> Profile:
    import yaml

    front = {key.replace("_", "-"): value for key, value in keys.items()}
    text = f"---\n{yaml.safe_dump({'name': name, **front}, sort_keys=False)}---\nYou are {name}.\n"
    return parse_profile(name, text, f"profiles/{name}.md")


def verdict(view: JobView, caps: frozenset[str] | None = LINUX, *, now: datetime = T0,
            routing: Routing | None = None, others: tuple[JobView, ...] = ()) -> Verdict:
    """What a worker with `caps` decides for `view` at `now`."""
    found = assess([view, *others], now, worker_caps=caps, routing=routing)
    return next(v for v in found if v.job.id == view.id)


def engine_for(view: JobView, routing: Routing, caps: frozenset[str]) -> str | None:
    """The engine a worker with `caps` runs `view` by, as the claim resolves it."""
    assert view.manifest is not None
    chosen = (routing.profiles or {}).get(view.manifest.profile or "")
    manifest = apply_profile(view.manifest, chosen)
    if manifest.engine is not None or manifest.engine_class is None:
        return manifest.engine
    return choose_engine(manifest.engine_class, routing.engines_of(manifest.engine_class, chosen), caps)


# --- capabilities --------------------------------------------------------------------------------


def test_a_missing_capability_blocks_naming_it() -> None:
    """A job needing has:docker waits on a worker without it, and the reason names what is missing."""
    found = verdict(job("build", capabilities=["has:git", "has:docker"]))
    assert (found.kind, found.reason) == ("capability",
                                          "needs capability has:docker that this worker lacks")
    assert verdict(job("build", capabilities=["has:git", "has:docker"]), LINUX | {"has:docker"}).ready


def test_an_unmet_version_requirement_blocks_and_a_met_one_does_not() -> None:
    """node>=20,<23 is not met by node=18.19.0 nor node=23.1.0, and is met by node=20.11.1."""
    view = job("ui", capabilities=["node>=20,<23"])
    for old in ("node=18.19.0", "node=23.1.0"):
        found = verdict(view, LINUX | {"has:node", old})
        assert (found.kind, found.reason) == (
            "capability", "needs capability node>=20,<23 that this worker lacks")
    assert verdict(view, LINUX | {"has:node", "node=20.11.1"}).ready
    assert verdict(view, LINUX | {"has:node"}).kind == "capability"  # no version known: not met


def test_a_gpu_job_on_a_cpu_fleet_waits_and_cpu_jobs_are_taken() -> None:
    """No worker of a fleet without gpu takes the gpu job, each naming gpu; each takes the CPU job."""
    train = job("train", capabilities=["gpu"], priority="critical")
    lint = job("lint", priority="low")
    fleet = {"laptop": frozenset({"os:mac", "arch:arm64", "engine:claude"}),
             "ci": LINUX | {"has:docker", "engine:codex"},
             "tagged": LINUX | {"region=eu", "gpu-ready"}}  # tags that merely look like gpu
    for name, caps in fleet.items():
        found = {v.job.id: v for v in assess([train, lint], T0, worker_caps=caps,
                                              routing=Routing(worker_id=name))}
        assert (found["train"].kind, found["train"].reason) == (
            "capability", "needs capability gpu that this worker lacks"), name
        assert pick([train, lint], T0, worker_caps=caps, routing=Routing(worker_id=name)) is lint
    assert pick([train, lint], T0, worker_caps=LINUX | {"gpu"}) is train


def test_a_profiles_capabilities_are_added_to_the_jobs() -> None:
    """A job needing gpu whose profile needs has:docker runs only where both are."""
    routing = Routing({"trainer": profile("trainer", capabilities=["has:docker"])})
    view = job("train", profile="trainer", capabilities=["gpu"])
    found = verdict(view, LINUX | {"gpu"}, routing=routing)
    assert (found.kind, found.reason) == ("capability",
                                          "needs capability has:docker that this worker lacks")
    assert verdict(view, LINUX | {"has:docker"}, routing=routing).reason == (
        "needs capability gpu that this worker lacks")
    assert verdict(view, LINUX | {"gpu", "has:docker"}, routing=routing).ready


def test_a_missing_profile_blocks_with_kind_profile() -> None:
    """A job naming a profile the queue lacks is never ready, whatever the worker has."""
    routing = Routing({"qa": profile("qa")})
    found = verdict(job("orphan", profile="ghost"), LINUX | {"gpu"}, routing=routing)
    assert found.kind == "profile"
    assert found.reason == "profile 'ghost' does not exist: add profiles/ghost.md or fix the job's 'profile:'"


def test_yolo_without_allow_yolo_blocks_with_kind_profile() -> None:
    """A yolo job is held back when its profile does not allow yolo, and taken when it does."""
    routing = Routing({"strict": profile("strict"), "lax": profile("lax", allow_yolo=True)})
    found = verdict(job("bold", profile="strict", yolo=True), routing=routing)
    assert found.kind == "profile" and "yolo is not allowed by profile 'strict'" in str(found.reason)
    assert verdict(job("bold", profile="lax", yolo=True), routing=routing).ready


# --- engine classes ------------------------------------------------------------------------------


def test_an_engine_class_resolves_to_the_first_listed_engine_the_worker_has() -> None:
    """engine-class coding-agent on a worker with aider and codex (no claude) runs codex."""
    routing = Routing(engine_classes=CLASSES)
    caps = LINUX | {"engine:aider", "engine:codex"}
    view = job("fix", engine_class="coding-agent")
    assert verdict(view, caps, routing=routing).ready
    assert engine_for(view, routing, caps) == "codex"
    assert engine_for(view, routing, LINUX | {"engine:claude", "engine:aider"}) == "claude"


def test_an_engine_class_with_no_engine_on_this_worker_blocks_naming_class_and_engines() -> None:
    """A worker with none of the class's engines waits, naming the class and the engines it lists."""
    found = verdict(job("fix", engine_class="coding-agent"), routing=Routing(engine_classes=CLASSES))
    assert (found.kind, found.reason) == (
        "capability", "needs an engine of class coding-agent (claude, codex, aider) that this worker lacks")


def test_an_engine_class_that_names_no_engines_blocks_saying_where_to_list_them() -> None:
    """A class neither aq.yaml nor the profile lists is held back with how to fix it."""
    found = verdict(job("fix", engine_class="oracle"), LINUX | {"engine:claude"},
                    routing=Routing(engine_classes=CLASSES))
    assert found.kind == "capability"
    assert found.reason == ("engine-class 'oracle' names no engines: list them in aq.yaml "
                            "engine_classes or the profile's prefers-engine")


def test_the_profiles_prefers_engine_order_beats_the_queues_class_order() -> None:
    """aq.yaml lists claude before codex; a profile preferring codex gets codex where both are."""
    routing = Routing({"dev": profile("dev", engine_class="coding-agent", prefers_engine=["codex", "claude"])},
                      CLASSES)
    both = LINUX | {"engine:claude", "engine:codex"}
    assert engine_for(job("with-profile", profile="dev"), routing, both) == "codex"
    assert engine_for(job("without", engine_class="coding-agent"), routing, both) == "claude"
    assert engine_for(job("with-profile", profile="dev"), routing, LINUX | {"engine:claude"}) == "claude"


def test_a_profiles_prefers_engine_decides_whether_a_worker_qualifies() -> None:
    """The profile's list, not aq.yaml's, decides: a worker with only aider (listed by aq.yaml
    but not by the profile) waits, naming the profile's engines."""
    routing = Routing({"dev": profile("dev", engine_class="coding-agent", prefers_engine=["codex", "claude"])},
                      CLASSES)
    found = verdict(job("fix", profile="dev"), LINUX | {"engine:aider"}, routing=routing)
    assert found.reason == "needs an engine of class coding-agent (codex, claude) that this worker lacks"


def test_a_job_naming_another_class_ignores_the_profiles_prefers_engine() -> None:
    """prefers-engine orders the profile's own class; a job naming another class uses aq.yaml's list."""
    classes = {**CLASSES, "reviewers": ("gemini", "claude")}
    routing = Routing({"dev": profile("dev", engine_class="coding-agent", prefers_engine=["codex"])},
                      classes)
    caps = LINUX | {"engine:codex", "engine:claude"}
    view = job("review", profile="dev", engine_class="reviewers")
    assert verdict(view, caps, routing=routing).ready
    assert engine_for(view, routing, caps) == "claude"


def test_a_jobs_concrete_engine_needs_no_class_resolution() -> None:
    """A job naming engine: shell under a profile with a class is not held back by the class."""
    routing = Routing({"dev": profile("dev", engine_class="coding-agent")}, CLASSES)
    view = job("script", profile="dev", engine="shell")
    assert verdict(view, LINUX, routing=routing).ready
    assert engine_for(view, routing, LINUX) == "shell"


# --- preferences ---------------------------------------------------------------------------------


def test_a_non_preferred_worker_waits_for_the_preference_window() -> None:
    """prefers factory:alpha: worker beta is held back until prefer_window after the job was
    added, and may take it at and after that moment."""
    view = job("fix", prefers=["factory:alpha"], added=T0)
    beta = Routing(worker_id="beta", prefer_window=120.0)
    early = verdict(view, now=T0 + timedelta(seconds=30), routing=beta)
    assert early.kind == "preferred"
    assert early.reason == f"preferred for factory:alpha until {iso(T0 + timedelta(seconds=120))} (90s more)"
    assert verdict(view, now=T0 + timedelta(seconds=119), routing=beta).kind == "preferred"
    assert verdict(view, now=T0 + timedelta(seconds=120), routing=beta).ready
    assert verdict(view, now=T0 + timedelta(hours=1), routing=beta).ready


def test_the_preferred_factory_takes_the_job_at_once() -> None:
    """The worker a job prefers by name may take it the moment it is added."""
    view = job("fix", prefers=["factory:alpha"], added=T0)
    assert verdict(view, routing=Routing(worker_id="alpha")).ready


def test_an_engine_preference_is_met_by_a_worker_with_that_engine() -> None:
    """prefers engine:codex: a worker with codex takes it at once, one without waits the window."""
    view = job("fix", prefers=["engine:codex"], added=T0)
    routing = Routing(worker_id="any", prefer_window=60.0)
    assert verdict(view, LINUX | {"engine:codex"}, routing=routing).ready
    assert verdict(view, LINUX | {"engine:claude"}, routing=routing).kind == "preferred"
    assert verdict(view, LINUX | {"engine:claude"}, now=T0 + timedelta(seconds=60), routing=routing).ready


def test_the_preference_window_opens_from_a_retrys_time() -> None:
    """A retried job's preference window is counted from its not-before time, not from when it was added."""
    retry_at = T0 + timedelta(minutes=10)
    view = job("fix", prefers=["factory:alpha"], added=T0, not_before=retry_at)
    routing = Routing(worker_id="beta", prefer_window=120.0)
    assert verdict(view, now=retry_at + timedelta(seconds=60), routing=routing).kind == "preferred"
    assert verdict(view, now=retry_at + timedelta(seconds=120), routing=routing).ready


def test_a_preference_never_beats_a_missing_capability() -> None:
    """The preferred worker still needs the job's capabilities; after the window nobody without them takes it."""
    view = job("train", prefers=["factory:alpha"], capabilities=["gpu"])
    assert verdict(view, LINUX, routing=Routing(worker_id="alpha")).kind == "capability"
    assert verdict(view, LINUX, now=T0 + timedelta(hours=1),
                   routing=Routing(worker_id="beta")).kind == "capability"


def test_without_a_worker_identity_no_preference_applies() -> None:
    """Asked with no worker id (`aq next`), a preferred job is not held back."""
    assert verdict(job("fix", prefers=["factory:alpha"]), routing=Routing()).ready


def test_a_waiting_preferred_job_lets_the_next_one_be_taken() -> None:
    """While a higher-priority job waits for its preferred worker, another worker takes the next job."""
    urgent = job("urgent", prefers=["factory:alpha"], priority="critical")
    routine = job("routine", priority="low")
    assert pick([urgent, routine], T0, worker_caps=LINUX, routing=Routing(worker_id="beta")) is routine
    assert pick([urgent, routine], T0, worker_caps=LINUX, routing=Routing(worker_id="alpha")) is urgent


# --- real processes ----------------------------------------------------------------------------


def test_a_worker_runs_the_engine_its_class_resolves_to_and_the_claim_records_it(
        queue_root: Path) -> None:
    """A job of engine class `scripted` (aq.yaml: ghost, then two) under a profile preferring
    `one` runs engine `one`; without the profile, `two` (ghost is not installed); each claimed
    event names the engine."""
    (queue_root / "aq.yaml").write_text(
        "default_engine: shell\n"
        "engines:\n"
        "  ghost: {cmd: [aq-test-no-such-engine, '{prompt_file}']}\n"
        "  one: {cmd: [bash, -c, 'echo one > \"$AQ_JOB_ID.ran\"'], input: stdin}\n"
        "  two: {cmd: [bash, -c, 'echo two > \"$AQ_JOB_ID.ran\"'], input: stdin}\n"
        "engine_classes:\n  scripted: [ghost, two, one]\n")
    (queue_root / "profiles" / "scripter.md").write_text(
        "---\nengine-class: scripted\nprefers-engine: [ghost, one, two]\n---\nYou script.\n")
    write_job(queue_root, "by-profile", "x", profile="scripter", priority="high")
    write_job(queue_root, "by-class", "x", engine_class="scripted")
    write_job(queue_root, "by-nothing-here", "x", engine_class="ghostly", priority="critical")
    ran = run_aq("run", "--drain", cwd=queue_root)
    assert ran.returncode == 0, ran.stderr
    assert (queue_root / "by-profile.ran").read_text() == "one\n"
    assert (queue_root / "by-class.ran").read_text() == "two\n"
    assert events(queue_root, "by-profile", "claimed")[0]["engine"] == "one"
    assert events(queue_root, "by-class", "claimed")[0]["engine"] == "two"
    assert (queue_root / "queue" / "inbox" / "by-nothing-here.md").exists()


def test_aq_next_explains_a_job_no_engine_here_can_run(queue_root: Path) -> None:
    """`aq next --explain` names the class and its engines for a job this machine cannot serve."""
    (queue_root / "aq.yaml").write_text((queue_root / "aq.yaml").read_text().replace(
        "coding-agent: [claude, codex, gemini, aider, copilot, opencode, qwen, cursor-agent, amp, goose, devin]",
        "coding-agent: [aq-none-a, aq-none-b]"))
    write_job(queue_root, "fix", "x", engine_class="coding-agent")
    ran: Ran = run_aq("next", "--explain", cwd=queue_root)
    assert ran.returncode == 0, ran.stderr
    assert ("skip  fix: needs an engine of class coding-agent (aq-none-a, aq-none-b) that this "
            "worker lacks") in ran.stdout


def _has_gpu_here() -> bool:
    import shutil
    import subprocess

    exe = shutil.which("nvidia-smi")
    return exe is not None and subprocess.run([exe], capture_output=True).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(_has_gpu_here(), reason="this machine has a gpu: every worker here probes one")
def test_two_workers_with_different_capabilities_share_one_fleet(tmp_path: Path) -> None:
    """Worker A (--cap gpu) and worker B (no gpu) drain one queue through a remote: every gpu job
    runs on A, the others on either, and every job runs exactly once."""
    ledger = tmp_path / "ledger.txt"
    body = f'echo "$AQ_JOB_ID $AQ_WORKER_ID" >> {ledger}\nsleep 0.2'
    gpu: dict[str, tuple[str, dict[str, Any]]] = {
        f"gpu-{n}": (body, {"capabilities": ["gpu"]}) for n in range(3)}
    cpu: dict[str, tuple[str, dict[str, Any]]] = {f"cpu-{n}": (body, {}) for n in range(4)}
    with fleet_in(tmp_path / "fleet", clones=2) as fleet:
        fleet.drop_jobs({**gpu, **cpu})
        a, b = fleet.clones
        worker_a = fleet.worker(a, "wa", "--drain", "--cap", "gpu")
        worker_b = fleet.worker(b, "wb", "--drain")
        assert fleet.finish(worker_b) == 0, fleet.err(worker_b)
        assert fleet.finish(worker_a) == 0, fleet.err(worker_a)
        rows = ledger_rows(ledger)
        ran_on = {job_id: worker for job_id, worker in rows}
        assert Counter(job_id for job_id, _ in rows) == Counter({**dict.fromkeys(gpu, 1), **dict.fromkeys(cpu, 1)})
        assert all(ran_on[job_id] == "wa" for job_id in gpu)
        assert {fleet.stage(job_id) for job_id in (*gpu, *cpu)} == {"review"}
        for job_id in gpu:
            assert [c["by"] for c in fleet.events(job_id, "claimed")] == ["wa"]
