"""The review gate's pure parts: reading a verdict from what a reviewer printed, plain or as an
agent CLI's JSON stream, and the review job's key and frontmatter."""

from __future__ import annotations

import json

from aq.core.manifest import Manifest, ReviewGate
from aq.core.review import read_verdict, review_fields, review_key, reviewed_attempt


def test_a_plain_verdict_line_is_read_the_last_one_winning() -> None:
    assert read_verdict("looks fine\nVERDICT: approve\n").approved
    assert not read_verdict("VERDICT: approve\nno, wait\n**VERDICT: changes**\n").approved
    missing = read_verdict("I like it")
    assert not missing.approved and "ended without a line" in missing.text


def test_a_verdict_inside_an_agent_clis_json_stream_is_read() -> None:
    """claude -p --output-format stream-json (and codex, gemini) put the text in JSON strings,
    where a line break is an escape: the verdict is read from the text they hold."""
    stream = "\n".join(json.dumps(event) for event in (
        {"type": "system", "subtype": "init", "session_id": "s1"},
        {"type": "assistant", "message": {"content": [{"type": "text",
                                                       "text": "The change is right.\n\nVERDICT: approve"}]}},
        {"type": "result", "result": "The change is right.\n\nVERDICT: approve", "cost_usd": 0.01},
    ))
    verdict = read_verdict("[aq] engine claude\n" + stream)
    assert verdict.approved
    assert "The change is right." in verdict.text and '{"type"' not in verdict.text
    asks = json.dumps({"type": "result", "result": "Missing tests.\nVERDICT: changes"})
    assert not read_verdict(asks).approved


def test_a_review_job_is_known_by_its_key_and_its_parent_both() -> None:
    fields = review_fields("job-a", 3, 2, ReviewGate(profile="reviewer", engine="codex"))
    assert fields["idempotency-key"] == review_key("job-a", 3) == "review:job-a:3"
    assert fields["title"] == "review 2 of job-a"
    assert (fields["parent"], fields["profile"], fields["engine"]) == ("job-a", "reviewer", "codex")
    made = Manifest(id="r", title="t", body="b", idempotency_key="review:job-a:3", parent="job-a")
    assert reviewed_attempt(made, "job-a") == 3 and reviewed_attempt(made, "job-b") is None
    stray = Manifest(id="r", title="t", body="b", idempotency_key="review:job-a:3")
    assert reviewed_attempt(stray, "job-a") is None  # not its child: no review of it
