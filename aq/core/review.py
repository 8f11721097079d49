"""The agent review gate: once a job's verify passed, a review job (a child of it, run by the
reviewer's profile and engine) reads the task and the diff and ends with a verdict line;
approve moves the job on, changes sends it back with the review as its failure, up to
review.max_rounds (then dead_letter)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from aq.core.manifest import Manifest, ReviewGate

REVIEW_KEY = "review:"  # a review job's idempotency key: review:<job>:<the attempt whose work it reviews>
_VERDICT = re.compile(r"^[\W_]*VERDICT:[\W_]*(approve|changes)\b", re.I | re.M)
DIFF_CHARS = 60_000  # of the diff a review prompt carries; the rest is said to be left out


@dataclass(frozen=True, slots=True)
class Verdict:
    approved: bool
    text: str  # the review as the reviewer wrote it (its log's last part), for the next prompt


def said_text(log: str) -> str:
    """The log as a person reads it: each JSON line replaced by the strings it holds (its
    messages, with their own line breaks), every other line as it is."""
    lines = []
    for line in log.splitlines():
        stripped = line.strip()
        if stripped.startswith(("{", "[")):
            try:
                lines.extend(_strings(json.loads(stripped)))
                continue
            except ValueError:
                pass
        lines.append(line)
    return "\n".join(lines)


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


def review_key(job_id: str, attempt: int) -> str:
    return f"{REVIEW_KEY}{job_id}:{attempt}"


def reviewed_attempt(manifest: Manifest | None, job_id: str) -> int | None:
    """The attempt of `job_id` whose work a job reviews; None: it is no review of that job (its
    key, and its parent, must both say so)."""
    key = manifest.idempotency_key if manifest else None
    prefix = f"{REVIEW_KEY}{job_id}:"
    if (manifest is None or manifest.parent != job_id or not key or not key.startswith(prefix)
            or not key[len(prefix):].isdigit()):
        return None
    return int(key[len(prefix):])


def read_verdict(log: str) -> Verdict:
    """The last verdict line of a review's log. None there is no approval: a review that says
    nothing asks for nothing to ship. An agent CLI that streams JSON (claude, codex, gemini...)
    says its text inside JSON strings: those are read as the text they hold."""
    text = said_text(log)
    found = list(_VERDICT.finditer(text))
    text = text.strip()[-4000:]
    if not found:
        return Verdict(False, f"{text}\n[the review ended without a line 'VERDICT: approve' or "
                              "'VERDICT: changes': taken as changes]")
    return Verdict(found[-1].group(1).lower() == "approve", text)


def review_fields(job_id: str, attempt: int, round_: int, gate: ReviewGate) -> dict[str, object]:
    """The review job's frontmatter: a child of the job, run by the gate's profile and engine,
    settled (shipped) as soon as its engine is done."""
    fields: dict[str, object] = {"title": f"review {round_} of {job_id}", "parent": job_id,
                                 "idempotency-key": review_key(job_id, attempt),
                                 "verify": "true", "review-policy": "auto", "priority": "high"}
    if gate.profile:
        fields["profile"] = gate.profile
    if gate.engine:
        fields["engine"] = gate.engine
    return fields


def review_body(job_id: str, round_: int, task: str, diff: str) -> str:
    if len(diff) > DIFF_CHARS:
        diff = diff[:DIFF_CHARS] + f"\n[... {len(diff) - DIFF_CHARS} more characters left out]"
    return (f"Review round {round_} of job {job_id}: does the change below do the task, "
            "correctly and completely?\n\n## The task\n\n"
            f"{task.strip()}\n\n## The change\n\n```diff\n{diff.rstrip()}\n```\n\n"
            "Say what must change, if anything. End with one line, exactly:\n"
            "VERDICT: approve\nor\nVERDICT: changes\n")
