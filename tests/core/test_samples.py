"""Best of N in the pure core: which jobs are samples of which attempt, the round's winner and
failure, what a sample takes from its job, and when a waiting job may be taken again."""

from __future__ import annotations

from datetime import timedelta

import pytest

from aq.core.events import fold
from aq.core.lifecycle import Outcome, Stage
from aq.core.manifest import Manifest, parse_manifest
from aq.core.samples import Round, Sample, sample_body, sample_fields, sample_key, sample_of
from aq.core.scheduler import JobView, assess
from aq.errors import ManifestError
from tests.helpers.queue import T0


def sample(number: int, stage: Stage, finished: str | None = None, outcome: str | None = None,
           tail: str | None = None) -> Sample:
    return Sample(id=f"s{number}", number=number, stage=stage, finished=finished,
                  outcome=outcome, tail=tail, engine=f"e{number}", branch=f"aq/s{number}",
                  head=None)


def test_a_sample_is_known_by_its_key_and_its_parent_both() -> None:
    key = sample_key("job", 3, 2)
    assert key == "sample:job:3:2"
    assert sample_of("job", key, "job") == (3, 2)
    assert sample_of("other", key, "job") is None  # a key alone does not make a sample
    assert sample_of("job", "sample:job:x:2", "job") is None
    assert sample_of("job", "sample:jobs:3:2", "job") is None
    assert sample_of("job", None, "job") is None


def test_the_winner_is_the_first_to_pass_by_when_it_ended() -> None:
    round_ = Round(3, (sample(1, Stage.SHIPPED, "2026-12-05T10:00:09"),
                       sample(2, Stage.BUILDING),
                       sample(3, Stage.SHIPPED, "2026-12-05T10:00:02")))
    assert round_.winner is not None and round_.winner.number == 3
    assert [s.number for s in round_.unsettled] == [2]
    assert not round_.all_failed and round_.missing == ()


def test_a_round_with_samples_not_made_yet_is_not_over() -> None:
    round_ = Round(3, (sample(2, Stage.FAILED, outcome="verify_failed"),))
    assert round_.missing == (1, 3)
    assert not round_.all_failed and round_.winner is None


def test_every_sample_failed_is_one_failure_with_each_tail() -> None:
    round_ = Round(2, (sample(1, Stage.FAILED, outcome="timeout", tail="took too long"),
                       sample(2, Stage.DEAD_LETTER, outcome="verify_failed", tail="1 failed")))
    assert round_.all_failed
    outcome, tail = round_.failure()
    assert outcome is Outcome.VERIFY_FAILED
    assert "## sample 1 (s1, engine e1): timeout\ntook too long" in tail
    assert "## sample 2 (s2, engine e2): verify_failed\n1 failed" in tail
    assert Round(1, (sample(1, Stage.FAILED, outcome="timeout"),)).failure()[0] is Outcome.TIMEOUT
    canceled = Round(1, (sample(1, Stage.FAILED),))  # canceled before it ran: no outcome
    assert canceled.failure() == (Outcome.ENGINE_FAILED,
                                  "## sample 1 (s1, engine e1): failed\n(it ended in failed)")


def test_a_sample_takes_its_jobs_frontmatter_less_what_is_the_jobs_alone() -> None:
    front = {"title": "T", "samples": 3, "engines": ["a", "b"], "verify": "make test",
             "repo": "git@x:y.git", "retry": {"max": 2}, "review": {"engine": "r"},
             "tracker-item": "github:1", "priority": "high", "lock": "db", "deps": ["x"]}
    fields = sample_fields(front, job_id="job", title="T", attempt=4, number=2, wanted=3,
                           engine="b")
    assert fields == {"verify": "make test", "repo": "git@x:y.git", "priority": "high",
                      "lock": "db", "title": "sample 2 of 3 of job: T", "parent": "job",
                      "idempotency-key": "sample:job:4:2", "engine": "b", "retry": 0,
                      "review-policy": "auto"}
    assert sample_body("do it", None) == "do it"
    assert "An earlier attempt at this task failed" in sample_body("do it", "boom")


def test_a_manifest_says_samples_and_engines() -> None:
    text = "---\nengines: [a, b, c]\nverify: 'true'\n---\ndo it\n"
    manifest = parse_manifest("j", text, "j.md")
    assert (manifest.samples, manifest.engines) == (3, ("a", "b", "c"))
    assert parse_manifest("j", "---\nsamples: 2\nengines: a\n---\ndo it\n", "j.md").samples == 2
    for bad, says in (("samples: 0", "from 1 to 10"), ("samples: true", "from 1 to 10"),
                      ("engines: []", "names no engine"), ("mcp: 1", "not true or false")):
        with pytest.raises(ManifestError, match=says):
            parse_manifest("j", f"---\n{bad}\n---\ndo it\n", "j.md")


def view(job_id: str, stage: Stage, key: str | None = None, minute: int = 0,
         awaiting: int | None = None) -> JobView:
    manifest = Manifest(id=job_id, title=job_id, body="do it", samples=2 if key is None else 1,
                        parent="p" if key else None, idempotency_key=key)
    events = ([{"ts": "t", "type": "claimed", "by": "w", "token": "t1", "attempt": awaiting},
               {"ts": "t", "type": "finished", "token": "t1", "action": "await",
                "outcome": "awaiting_children"}] if awaiting else [])
    return JobView(job_id, stage, manifest, fold(events), T0 + timedelta(minutes=minute))


def test_a_waiting_job_is_taken_once_a_sample_of_its_round_won_though_others_run() -> None:
    parent = view("p", Stage.INBOX, awaiting=2)
    running = view("s2", Stage.BUILDING, "sample:p:2:2", 2)
    won = view("s1", Stage.SHIPPED, "sample:p:2:1", 1)
    assert assess([parent, running, won], T0)[0].ready
    # a winner of an earlier round does not count; nor does a review still to run
    old = view("s0", Stage.SHIPPED, "sample:p:1:1", 0)
    assert not assess([parent, running, old], T0)[0].ready
    review = JobView("r", Stage.INBOX, Manifest(id="r", title="r", body="x", parent="p",
                                               idempotency_key="review:p:2"), fold([]),
                     T0 + timedelta(minutes=3))
    verdict = assess([parent, running, won, review], T0)[0]
    assert not verdict.ready and "(r)" in (verdict.reason or "")
