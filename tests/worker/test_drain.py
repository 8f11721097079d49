"""What a draining worker tells a person while it waits, and how it says a retry is coming."""

from __future__ import annotations

import re
from pathlib import Path

from tests.helpers.cli import run_aq
from tests.helpers.queue import write_job


def test_a_draining_worker_says_which_retry_it_waits_for_and_until_when(queue_root: Path) -> None:
    """`aq run --drain` waiting on a retry's backoff says so once, with the wait and the time it
    ends; the failure line says which retry comes and in how long."""
    write_job(queue_root, "wobbly", 'test "$AQ_ATTEMPT" -ge 2 || { echo "not yet: $(head -c 6 /dev/urandom | base64)"; exit 1; }',
              retry={"max": 3, "backoff": "2s"})
    ran = run_aq("run", "--drain", "--poll", "0.1", cwd=queue_root, timeout=120)
    assert ran.returncode == 0, ran.stderr
    lines = ran.stdout.splitlines()
    failed = next(line for line in lines if "wobbly: engine exited with 1" in line)
    assert failed.endswith("-> inbox (engine_failed; retry 1 of 3 in 2s)"), lines
    waits = [line for line in lines if "waiting " in line]
    assert len(waits) == 1, lines
    assert re.search(r": waiting (2s|[01]\.\ds|2\.0s) for wobbly's retry backoff \(until \d\d:\d\d:\d\d UTC\)$",
                     waits[0]), waits
    assert any("wobbly: engine exited 0; no verify -> review" in line for line in lines), lines
