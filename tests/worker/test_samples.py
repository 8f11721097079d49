"""Best of N (`samples:`): the job's work done by N sample jobs, each on its own branch; the
first whose verify passes wins, its branch becomes the job's and the others are canceled; all
failing is one failed attempt of the job with every sample's tail."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers.cli import Ran
from tests.helpers.git import git, project_repo
from tests.helpers.queue import configure, events, stage_of, write_job

Aq = Callable[..., Ran]
VERIFY = "grep -qx good answer"


def engine(says: str, out: Path) -> dict[str, object]:
    """Writes `says` into the worktree's answer file, and its prompt into out/<says>-prompt-<job>."""
    script = f'echo {says} > answer; cp "$0" "{out}/{says}-prompt-$AQ_JOB_ID"'
    return {"cmd": ["bash", "-c", script, "{prompt_file}"], "input": "prompt"}


@pytest.fixture
def project(queue_root: Path, tmp_path: Path) -> Path:
    """A project repo the queue's jobs work on, and engines good (passes verify), bad, worse."""
    bare = project_repo(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    configure(queue_root, repo=str(bare), workspaces_dir=str(tmp_path / "ws"),
              engines={name: engine(name, out) for name in ("good", "bad", "worse")})
    return bare


def samples_of(root: Path, job_id: str) -> dict[str, tuple[str, str]]:
    """sample job id -> (its idempotency key, its stage)."""
    found = {}
    for path in (root / "queue").glob("*/*.md"):
        for line in path.read_text().splitlines():
            if line.startswith(f"idempotency-key: sample:{job_id}:"):
                found[path.stem] = (line.split(": ", 1)[1], path.parent.name)
    return found


def test_the_first_sample_to_pass_wins_and_its_branch_becomes_the_jobs(
        queue_root: Path, aq: Aq, project: Path) -> None:
    write_job(queue_root, "pick", "Write the answer.", verify=VERIFY,
              engines=["bad", "good", "worse"], ship="merge")
    ran = aq("run", "--drain")
    assert ran.returncode == 0, ran.stderr

    assert stage_of(queue_root, "pick") == "testing"
    samples = samples_of(queue_root, "pick")
    by_key = {key: (job_id, stage) for job_id, (key, stage) in samples.items()}
    assert sorted(by_key) == ["sample:pick:1:1", "sample:pick:1:2", "sample:pick:1:3"]
    # one worker takes them oldest first: bad fails; good passes; the job, waiting longest,
    # is taken next, adopts good's branch and cancels worse before it ever ran
    assert [stage for _, stage in (by_key[f"sample:pick:1:{n}"] for n in (1, 2, 3))] == [
        "failed", "shipped", "failed"]
    winner, loser = by_key["sample:pick:1:2"][0], by_key["sample:pick:1:3"][0]
    assert events(queue_root, loser, "claimed") == []
    assert events(queue_root, loser, "moved")[-1]["why"] == (
        f"sample 2 ({winner}) of pick passed first")
    finished = events(queue_root, "pick", "finished")
    assert [(e["action"], e["outcome"]) for e in finished] == [
        ("await", "awaiting_children"), ("pass", "ok")]
    assert finished[-1]["branch"] == f"aq/{winner}"
    assert finished[-1]["sample"] == winner
    assert "engine" not in finished[-1]  # the job ran no engine: its samples did
    # the job's diff and its ship are the winner's work, never a loser's
    diff = aq("diff", "pick")
    assert diff.returncode == 0, diff.stderr
    assert "+good" in diff.stdout and "+bad" not in diff.stdout
    shipped = aq("ship", "pick")
    assert shipped.returncode == 0, shipped.stderr
    assert git(project, "show", "main:answer").strip() == "good"


def test_when_every_sample_fails_the_job_fails_once_with_every_tail_and_retries_a_new_round(
        queue_root: Path, aq: Aq, project: Path, tmp_path: Path) -> None:
    write_job(queue_root, "hard", "Write the answer.", verify=VERIFY, engine="bad", samples=2,
              retry={"max": 1, "backoff": "0s"})
    ran = aq("run", "--drain")
    assert ran.returncode == 0, ran.stderr

    finished = events(queue_root, "hard", "finished")
    assert [(e["action"], e["outcome"]) for e in finished] == [
        ("await", "awaiting_children"), ("retry", "verify_failed"),
        ("await", "awaiting_children"), ("dead", "verify_failed")]
    tail = finished[1]["tail"]
    assert tail.count("## sample ") == 2 and "engine bad" in tail
    assert stage_of(queue_root, "hard") == "dead_letter"
    keys = sorted(key for key, _ in samples_of(queue_root, "hard").values())
    assert keys == ["sample:hard:1:1", "sample:hard:1:2", "sample:hard:3:1", "sample:hard:3:2"]
    # the new round's samples were told what went wrong in the last one
    prompts = sorted((tmp_path / "out").glob("bad-prompt-*"))
    assert len(prompts) == 4
    assert sum("An earlier attempt at this task failed" in p.read_text() for p in prompts) == 2


def test_canceling_the_job_cancels_its_unsettled_samples(
        queue_root: Path, aq: Aq, project: Path) -> None:
    write_job(queue_root, "many", "Write the answer.", verify=VERIFY, engine="good", samples=3)
    ran = aq("run", "--once")  # the job's first attempt asks for its samples and waits
    assert ran.returncode == 0, ran.stderr
    assert [stage for _, stage in samples_of(queue_root, "many").values()] == ["inbox"] * 3
    canceled = aq("cancel", "many")
    assert canceled.returncode == 0, canceled.stderr
    assert [stage for _, stage in samples_of(queue_root, "many").values()] == ["failed"] * 3


@pytest.mark.parametrize(("keys", "says"), [
    ({"samples": 3}, "samples: needs a verify"),
    ({"samples": 11, "verify": "true"}, "not a number of samples from 1 to 10"),
    ({"engines": ["good", "nope"], "verify": "true"}, "engines: engine 'nope' is not defined"),
    ({"samples": 2, "verify": "true", "children": ["a"]}, "declares no children"),
    ({"idempotency-key": "sample:x:1:1"}, "are aq's own"),
])
def test_add_refuses_samples_it_cannot_run_in_one_line(
        queue_root: Path, aq: Aq, project: Path, keys: dict[str, object], says: str) -> None:
    front = "".join(f"{key}: {value!r}\n".replace("'", '"') for key, value in keys.items())
    ran = aq("add", "-", input=f"---\n{front}---\nWrite the answer.\n")
    assert ran.returncode != 0
    assert says in ran.stderr and "Traceback" not in ran.stderr
    assert len(ran.stderr.strip().splitlines()) == 1, ran.stderr


def test_samples_need_a_repo(queue_root: Path, aq: Aq) -> None:
    ran = aq("add", "-", input="---\nsamples: 2\nverify: 'true'\n---\nWrite the answer.\n")
    assert ran.returncode != 0
    assert "samples: needs a repo" in ran.stderr, ran.stderr
