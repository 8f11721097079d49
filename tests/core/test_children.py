"""Child jobs in the pure core: a family's settled children, the wait of a parent, the fold of
its `await`, and the key that makes a spawned child once."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from aq.core.children import child_key, family
from aq.core.events import fold
from aq.core.lifecycle import Stage
from aq.core.manifest import Manifest, parse_manifest
from aq.core.scheduler import JobView, assess
from tests.helpers.queue import T0


def view(job_id: str, stage: Stage = Stage.INBOX, parent: str | None = None, minute: int = 0,
         awaiting: bool = False) -> JobView:
    manifest = Manifest(id=job_id, title=job_id, body="do it", parent=parent)
    state = fold([{"ts": "t", "type": "finished", "action": "await", "outcome":
                   "awaiting_children"}]) if awaiting else fold([])
    return JobView(job_id, stage, manifest, state, T0 + timedelta(minutes=minute))


def test_a_family_lists_its_children_oldest_first_and_which_are_unsettled() -> None:
    jobs = [view("p"), view("c2", Stage.BUILDING, "p", 2), view("c1", Stage.SHIPPED, "p", 1),
            view("c3", Stage.REVIEW, "p", 3), view("other", Stage.INBOX, "q", 0)]
    kin = family(jobs, "p")
    assert kin.children == (("c1", Stage.SHIPPED), ("c2", Stage.BUILDING), ("c3", Stage.REVIEW))
    assert kin.unsettled == ("c2",)
    assert kin.waiting_reason() == "waits for its children: 2 of 3 settled (c2)"
    assert family(jobs, "c1").children == () and family(jobs, "c1").waiting_reason() is None


def test_a_parent_that_waits_is_blocked_until_every_child_settles() -> None:
    parent = view("p", awaiting=True)
    child = view("c", Stage.INBOX, "p", 1)
    verdicts = {v.job.id: v for v in assess([parent, child], T0)}
    assert verdicts["p"].reason == "waits for its children: 0 of 1 settled (c)"
    assert verdicts["c"].ready
    settled = [parent, replace(child, stage=Stage.FAILED)]
    assert assess(settled, T0)[0].ready  # a failed child is settled: the parent's verify judges
    # a parent that never waited (its engine has not run yet) is not held by its children
    assert {v.job.id: v.ready for v in assess([view("p"), child], T0)}["p"]


def test_the_wait_lasts_through_a_take_back_and_ends_with_any_other_finish_or_a_requeue() -> None:
    awaited = {"ts": "t", "type": "finished", "action": "await", "outcome": "awaiting_children"}
    claimed = {"ts": "t", "type": "claimed", "by": "w", "token": "2.w.x", "attempt": 2}
    reclaimed = {"ts": "t", "type": "finished", "action": "reclaim", "outcome": "lease_expired"}
    passed = {"ts": "t", "type": "finished", "action": "pass", "outcome": "ok"}
    retried = {"ts": "t", "type": "finished", "action": "retry", "outcome": "verify_failed"}
    requeued = {"ts": "t", "type": "moved", "action": "requeue"}
    assert fold([awaited]).awaiting_children
    assert fold([awaited, claimed]).awaiting_children  # the claim that runs only its verify
    assert fold([awaited, claimed, reclaimed]).awaiting_children
    for ending in (passed, retried, requeued):
        assert not fold([awaited, claimed, ending]).awaiting_children
    assert fold([awaited, claimed, retried]).retries_used == 1
    assert fold([awaited]).retries_used == 0  # waiting is no retry


def test_a_child_key_is_the_same_for_the_same_text_only() -> None:
    assert child_key("p", "echo a") == child_key("p", "echo a")
    assert child_key("p", "echo a") != child_key("p", "echo b") != child_key("q", "echo b")
    assert child_key("p", "echo a").startswith("child-of:p:")


def test_parent_and_children_keys_are_checked() -> None:
    manifest = parse_manifest("c", "---\nparent: p\n---\necho\n", "c.md")
    assert manifest.parent == "p"
    up_front = parse_manifest("p", "---\nchildren: [echo a, sub/task.md]\n---\necho\n", "p.md")
    assert up_front.children == ("echo a", "sub/task.md")
    for text, says in (("---\nparent: ../x\n---\necho\n", "is not a job id"),
                       ("---\nparent: c\n---\necho\n", "its own parent"),
                       ("---\nparent: p\ndeps: [p]\n---\necho\n", "wait for each other"),
                       ("---\nchildren: echo\n---\necho\n", "a list of job bodies"),
                       ("---\nchildren: [3]\n---\necho\n", "a job body (text)")):
        try:
            parse_manifest("c", text, "c.md")
        except Exception as err:  # ManifestError
            assert says in str(err), err
        else:
            raise AssertionError(f"accepted: {text!r}")
