"""Child jobs end to end: a running job spawns children (aq spawn), its engine finishes, it waits
in the inbox until every child is settled, then only its verify runs and sees their results.
A retried parent spawns no child twice; a canceled parent takes its unsettled children along."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from aq.core.events import parse_iso
from aq.errors import ExitStatus
from tests.helpers.cli import Ran
from tests.helpers.git import git, project_repo
from tests.helpers.queue import configure, events, stage_of, write_job

Aq = Callable[..., Ran]


def children_of(root: Path, parent: str) -> dict[str, str]:
    """child id -> stage, from the files (what `parent:` each says)."""
    found = {}
    for path in (root / "queue").glob("*/*.md"):
        if f"parent: {parent}\n" in path.read_text():
            found[path.stem] = path.parent.name
    return found


def spawner(out: Path, parts: int) -> str:
    """A parent's shell body: spawn `parts` children, each writing its part into `out`."""
    lines = [f"{sys.executable} -m aq spawn --title 'part {n}' --body 'echo {n} > {out}/part-{n}'"
             for n in range(1, parts + 1)]
    return "\n".join([*lines, "echo spawned"])


def test_a_parent_waits_for_its_children_then_its_verify_sees_their_work(
        queue_root: Path, aq: Aq, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    parts = " && ".join(f"test -f {out}/part-{n}" for n in (1, 2, 3))
    # the first verify fails once (after checking the parts): the retry runs the engine again,
    # which spawns the same three children again
    verify = f"{parts} && {{ test -f {out}/retried || {{ touch {out}/retried; exit 1; }}; }}"
    write_job(queue_root, "parent", spawner(out, 3), verify=verify,
              retry={"max": 1, "backoff": "0s", "on": ["verify_failed"]})
    ran = aq("run", "--drain")
    assert ran.returncode == 0, ran.stderr

    kids = children_of(queue_root, "parent")
    assert sorted(kids.values()) == ["review"] * 3, kids  # three, not six
    assert stage_of(queue_root, "parent") == "testing"
    finished = events(queue_root, "parent", "finished")
    assert [(e["action"], e["outcome"]) for e in finished] == [
        ("await", "awaiting_children"), ("retry", "verify_failed"), ("pass", "ok")]
    # the verify-only attempt started after every child had finished
    resumed = parse_iso(events(queue_root, "parent", "claimed")[1]["ts"])
    for kid in kids:
        assert parse_iso(events(queue_root, kid, "finished")[-1]["ts"]) <= resumed
    log = (queue_root / "queue" / ".logs" / "parent" / "2.log").read_text()
    assert "only its verify runs" in log and "spawned" not in log

    shown = json.loads(aq("show", "parent", "--json").stdout)
    assert {c["id"] for c in shown["children"]} == set(kids)
    assert all(json.loads(aq("show", kid, "--json").stdout)["parent"] == "parent" for kid in kids)


def test_a_waiting_parent_says_why_it_waits(queue_root: Path, aq: Aq, tmp_path: Path) -> None:
    write_job(queue_root, "parent", spawner(tmp_path, 2))
    ran = aq("run", "--once")
    assert ran.returncode == 0, ran.stderr
    assert stage_of(queue_root, "parent") == "inbox"
    listed = {j["id"]: j for j in json.loads(aq("ls", "--json").stdout)}
    assert listed["parent"]["blocked"]["kind"] == "children"
    assert listed["parent"]["blocked"]["reason"].startswith("waits for its children: 0 of 2 settled")
    shown = aq("show", "parent").stdout
    assert "children: 2, 0 settled (it waits for the rest, then its verify runs)" in shown


def test_canceling_a_parent_cancels_its_unsettled_children_and_theirs(
        queue_root: Path, aq: Aq) -> None:
    write_job(queue_root, "parent", "echo parent")
    git(queue_root, "add", "-A")
    git(queue_root, "commit", "-qm", "parent")
    child = aq("add", "--parent", "parent", "--title", "kid", "--body", "echo kid").stdout.strip()
    grandchild = aq("add", "--parent", child, "--title", "grandkid",
                    "--body", "echo grand").stdout.strip()
    done = aq("add", "--parent", "parent", "--title", "done kid", "--body", "echo done").stdout.strip()
    assert aq("cancel", done).returncode == 0  # settled already: left as it is

    ran = aq("cancel", "parent")
    assert ran.returncode == 0, ran.stderr
    assert f"also canceled, as its children: {child}, {grandchild}" in ran.stdout
    for kid in (child, grandchild):
        assert stage_of(queue_root, kid) == "failed"
    assert events(queue_root, child, "moved")[-1]["why"] == "its parent parent was canceled"
    assert len(events(queue_root, done, "moved")) == 1


def test_the_same_child_added_twice_is_made_once(queue_root: Path, aq: Aq) -> None:
    write_job(queue_root, "parent", "echo parent")
    first = aq("add", "--parent", "parent", "--body", "echo kid", "--json")
    again = aq("add", "--parent", "parent", "--body", "echo kid", "--json")
    other = aq("add", "--parent", "parent", "--body", "echo another kid", "--json")
    ids = [json.loads(r.stdout)["id"] for r in (first, again, other)]
    assert ids[0] == ids[1] != ids[2]
    assert [json.loads(r.stdout)["created"] for r in (first, again, other)] == [True, False, True]


def test_children_declared_up_front_are_added_with_their_parent_in_one_commit(
        queue_root: Path, aq: Aq) -> None:
    (queue_root / "tasks").mkdir()
    (queue_root / "tasks" / "lint.md").write_text("---\ntitle: lint it\npriority: high\n---\nmake lint\n")
    before = int(git(queue_root, "rev-list", "--count", "HEAD"))
    ran = aq("add", "-", "--json", input="---\ntitle: release\nchildren:\n"
             "  - echo build\n  - tasks/lint.md\n---\necho release\n")
    assert ran.returncode == 0, ran.stderr
    parent = json.loads(ran.stdout)["id"]
    kids = children_of(queue_root, parent)
    assert len(kids) == 2 and set(kids.values()) == {"inbox"}
    titles = {json.loads(aq("show", kid, "--json").stdout)["title"] for kid in kids}
    assert titles == {"echo build", "lint it"}
    assert int(git(queue_root, "rev-list", "--count", "HEAD")) == before + 1


@pytest.mark.parametrize(("args", "env", "status", "said"), [
    (("spawn", "--body", "echo x"), {}, ExitStatus.USAGE, "runs inside a job's attempt"),
    (("add", "--parent", "nope", "--body", "echo x"), {}, ExitStatus.REFUSED, "no job 'nope'"),
    (("add", "--parent", "gone", "--body", "echo x"), {}, ExitStatus.REFUSED,
     "gone is in shipped: a child is added while its parent is in inbox or building"),
    (("add", "--parent", "gone", "--id", "x", "--body", "echo x"), {}, ExitStatus.USAGE,
     "--id and --parent do not go together"),
    (("spawn", "--engine", "nosuch", "--body", "echo x"), {"AQ_JOB_ID": "gone"}, ExitStatus.USAGE,
     "--engine: engine 'nosuch' is not defined (known: aider, amp, claude, codex, copilot, "
     "cursor-agent, devin, gemini, goose, opencode, qwen, shell): add it under engines: in aq.yaml\n"),
])
def test_bad_spawns_are_one_line(queue_root: Path, aq: Aq, args: tuple[str, ...],
                                 env: dict[str, str], status: int, said: str) -> None:
    """Each says what is wrong in one line (spawn offered add's --force, which it has not)."""
    write_job(queue_root, "gone", "echo", stage="shipped")
    ran = aq(*args, env=env)
    assert ran.returncode == status and said in ran.stderr, ran.stderr
    assert ran.stderr.count("\n") == 1


def test_a_parent_with_a_repo_keeps_its_pushed_branch_through_its_verify_only_attempt(
        queue_root: Path, aq: Aq, tmp_path: Path) -> None:
    project = project_repo(tmp_path)
    configure(queue_root, repo=str(project), workspaces_dir=str(tmp_path / "ws"))
    write_job(queue_root, "parent", f"echo work > work.txt\n{spawner(tmp_path, 1)}",
              verify="test -f work.txt")
    ran = aq("run", "--drain")
    assert ran.returncode == 0, ran.stderr
    assert stage_of(queue_root, "parent") == "testing"
    ran_engine, verified = events(queue_root, "parent", "finished")
    assert (ran_engine["action"], verified["action"]) == ("await", "pass")
    # the verify-only attempt judged the branch the first one pushed, and says it is pushed
    assert verified["head"] == ran_engine["head"] == git(project, "rev-parse", "aq/parent").strip()
    assert verified["pushed"] is True
