"""Every shape `--json` prints, in one place: tests/ui/cli/test_cli_json.py pins them, so a script or
an agent that reads them keeps working."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable

    from aq.core.scheduler import Verdict
    from aq.store.snapshot import Job
    from aq.usecases.checks import FsckResult, LintResult
    from aq.usecases.fleet import WorkerRow
    from aq.usecases.gc import Freed
    from aq.usecases.jobs import JobDetail
    from aq.usecases.listing import NextResult
    from aq.usecases.moves import MoveResult
    from aq.usecases.ship import DiffResult
    from aq.usecases.tracker_delivery import OwedReport, Sent
    from aq.usecases.tracker_import import Imported


def job_json(job: Job, verdict: Verdict | None = None) -> dict[str, Any]:
    m = job.manifest
    state = job.state
    data: dict[str, Any] = {
        "id": job.id,
        "stage": str(job.stage),
        "archived": job.archived,
        "title": m.title if m else None,
        "priority": m.priority if m else None,
        "engine": m.engine if m else None,
        "profile": m.profile if m else None,
        "lock": m.lock if m else None,
        "deps": list(m.deps) if m else [],
        "capabilities": list(m.capabilities) if m else [],
        "tracker_item": m.tracker_item if m else None,
        "added": job.added.isoformat(),
        "attempts": state.attempt_count,
        "holder": state.holder,
        "lease_token": state.token,
        "not_before": state.not_before,
        "last_outcome": state.last_outcome,
        "out_of_scope": list(state.out_of_scope),
        "spent": {"usd": round(state.usd_used, 6), "tokens": state.tokens_used},
        "branch": {"name": state.branch, "head": state.branch_head,
                   "pushed": state.branch_pushed} if state.branch else None,
        "error": job.error,
    }
    if verdict is not None:
        data["ready"] = verdict.ready
        data["blocked"] = None if verdict.ready else {"kind": verdict.kind, "reason": verdict.reason}
    return data


def added_json(job: Job, created: bool) -> dict[str, Any]:
    return {**job_json(job), "created": created}


def detail_json(detail: JobDetail) -> dict[str, Any]:
    job = detail.job
    data = job_json(job, detail.verdict)
    data.update({
        "body": job.manifest.body if job.manifest else None,
        "keys": list(job.manifest.keys) if job.manifest else [],
        "resolved": {k: {"value": v.value, "source": v.source} for k, v in detail.resolved.items()},
        "allowed_moves": list(detail.allowed),
        "attempt_log": [
            {"number": a.number, "worker": a.worker, "token": a.token, "started": a.started,
             "finished": a.finished, "outcome": a.outcome, "verify_exit": a.verify_exit,
             "log": a.log, "artifacts": list(a.artifacts), "reason": a.reason,
             "engine": a.engine, "usage": a.usage}
            for a in job.state.attempts
        ],
        "events": list(detail.events),
        "parent": job.manifest.parent if job.manifest else None,
        "children": [{"id": kid, "stage": stage} for kid, stage in detail.children],
        "tracker": {"item": job.manifest.tracker_item, "sent": detail.tracker_sent,
                    "owed": [{"owner": owner, "since": since} for owner, since in detail.tracker_owed]}
        if job.manifest and job.manifest.tracker_item else None,
    })
    return data


def next_json(result: NextResult) -> dict[str, Any]:
    return {
        "next": job_json(result.chosen) if result.chosen else None,
        "halted": result.halted,
        "passed_over": [
            {"id": v.job.id, "ready": v.ready, "kind": v.kind, "reason": v.reason}
            for v in result.verdicts if result.chosen is None or v.job.id != result.chosen.id
        ],
        "score": result.ranked[0].score.breakdown() if result.ranked else None,
        "candidates": [  # the ready jobs in the router's order, the next first
            {"id": r.job.id, "priority": r.job.manifest.priority if r.job.manifest else None,
             "group": r.group, "score": r.score.breakdown()}
            for r in result.ranked
        ],
    }


def lint_json(result: LintResult) -> dict[str, Any]:
    return {"jobs": result.jobs, "problems": list(result.problems), "ok": not result.problems}


def fsck_json(result: FsckResult) -> dict[str, Any]:
    return {"commits": result.commits, "jobs": result.jobs, "problems": list(result.problems),
            "ok": not result.problems}


def sent_json(item: Sent) -> dict[str, Any]:
    return {"job": item.job_id, "ref": item.ref, "ok": item.ok, "message": item.message,
            "url": item.url}


def move_json(result: MoveResult) -> dict[str, Any]:
    return {"id": result.job_id, "from": result.source, "to": result.target, "action": result.action,
            "tracker": [sent_json(s) for s in result.tracker],
            "children_canceled": list(result.children_canceled)}


def imported_json(results: Iterable[Imported]) -> list[dict[str, Any]]:
    return [{"ref": r.ref, "outcome": r.outcome, "job": r.job_id, "stage": r.stage,
             "message": r.message} for r in results]


def delivery_json(report: OwedReport) -> dict[str, Any]:
    return {"sent": [sent_json(s) for s in report.sent],
            "waiting": [{"job": w.job_id, "ref": w.ref, "owner": w.owner, "since": w.since}
                        for w in report.waiting]}


def workers_json(rows: Iterable[WorkerRow]) -> list[dict[str, Any]]:
    return [{"worker": r.worker, "host": r.host, "heartbeat_age": r.silent_for,
             "age_from": r.age_from, "their_clock": r.their_clock, "jobs": list(r.jobs),
             "retiring": r.retiring} for r in rows]


def profile_json(p: Any) -> dict[str, Any]:
    return {"name": p.name, "version": p.version, "hash": p.content_hash,
            "capabilities": list(p.capabilities), "default-verify": p.verify, "engine": p.engine,
            "engine-class": p.engine_class, "prefers-engine": list(p.prefers_engine),
            "allowed-scope": None if p.allowed_scope is None else list(p.allowed_scope),
            "review-policy": p.review_policy, "timeout": p.timeout, "allow-yolo": p.allow_yolo}


def diff_json(result: DiffResult) -> dict[str, Any]:
    return {"id": result.job_id, "branch": result.branch, "base": result.base,
            "patch": result.patch}


def gc_json(freed: Iterable[Freed], dry_run: bool) -> dict[str, Any]:
    return {"dry_run": dry_run, "freed": [{"kind": f.kind, "what": f.what, "bytes": f.bytes}
                                          for f in freed]}
