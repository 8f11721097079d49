"""`--cap` takes several tags joined by commas as well as repeated (issue 18: comma lists where
a flag repeats)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers.cli import run_aq
from tests.helpers.queue import write_job


def test_cap_takes_a_comma_list_as_it_takes_repeats(queue_root: Path) -> None:
    shown = run_aq("doctor", "--cap", "gpu,big-disk", "--cap", "fast", "--json", cwd=queue_root)
    offered = set(json.loads(shown.stdout)["capabilities"])
    assert {"gpu", "big-disk", "fast"} <= offered and "gpu,big-disk" not in offered
    write_job(queue_root, "needs-both", capabilities=["gpu", "big-disk"])
    taken = run_aq("next", "--cap", "gpu,big-disk", "--json", cwd=queue_root)
    assert json.loads(taken.stdout)["next"]["id"] == "needs-both", taken.stdout
    assert json.loads(run_aq("next", "--cap", "gpu", "--json", cwd=queue_root).stdout)["next"] is None


def test_a_malformed_cap_is_refused_even_when_no_job_asks_for_one(queue_root: Path) -> None:
    """`aq next --cap 'node>='` once answered as if the tag were fine whenever no inbox job
    needed a capability probed (the tags were checked only by the probe)."""
    for tag in ("node>=", "a b"):
        ran = run_aq("next", "--cap", tag, cwd=queue_root)
        assert ran.returncode == 2 and ran.stderr.startswith(f"aq: --cap: capability {tag!r}"), ran
        assert ran.stderr.count("\n") == 1
