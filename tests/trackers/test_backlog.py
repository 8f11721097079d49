"""The tracker bridge against a real Backlog.md: tasks made, read and checked with its own CLI,
imported as jobs, run by a real worker with the shell engine, their progress posted back."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.cli import REPO, Ran, aq_env


def _find_backlog() -> Path | None:
    named = os.environ.get("AQ_TEST_BACKLOG")
    if named:
        return Path(named).resolve()
    local = REPO / ".tools/node_modules/.bin/backlog"
    if local.exists():
        return local
    found = shutil.which("backlog")
    return Path(found) if found else None


BACKLOG = _find_backlog()
if BACKLOG is None:
    pytest.skip("backlog.md is not installed: ./test.sh installs it with npm", allow_module_level=True)
assert BACKLOG is not None

# PATH without any folder holding a `backlog` (git and node stay), and the same with ours first
WITHOUT = os.pathsep.join(d for d in os.environ.get("PATH", "").split(os.pathsep)
                          if d and not os.access(os.path.join(d, "backlog"), os.X_OK))
WITH = f"{BACKLOG.parent}{os.pathsep}{WITHOUT}"

Aq = Callable[..., Ran]


def off_path(tmp_path: Path) -> str:
    """WITHOUT, with node after it where node lives only beside backlog (nvm): the npm package's
    `backlog` is a node script, which a `trackers.backlog.command` still needs to start."""
    node = shutil.which("node", path=WITH)
    if node is None or shutil.which("node", path=WITHOUT):
        return WITHOUT
    shim = tmp_path / "node-only"
    shim.mkdir()
    (shim / "node").symlink_to(node)
    return f"{WITHOUT}{os.pathsep}{shim}"


class Project:
    """A Backlog.md project in its own git repo, driven only through Backlog.md's CLI."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir()
        subprocess.run(["git", "init", "-q"], cwd=folder, env=aq_env(), check=True)
        self.cli("init", "plan", "--defaults", "--integration-mode", "none")

    def cli(self, *args: str) -> str:
        done = subprocess.run([str(BACKLOG), *args], cwd=self.folder, env=aq_env({"PATH": WITH}),
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"backlog {' '.join(args)}: {done.stderr}{done.stdout}"
        return done.stdout

    def create(self, title: str, description: str, *, labels: str = "",
               priority: str = "") -> str:
        args = ["task", "create", title, "-d", description, "--plain"]
        if labels:
            args += ["-l", labels]
        if priority:
            args += ["--priority", priority]
        found = re.search(r"^Task (TASK-\d+) ", self.cli(*args), re.MULTILINE)
        assert found, "backlog task create printed no task id"
        return found.group(1)

    def task(self, task_id: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.cli("task", "view", task_id, "--json"))["task"]
        return data

    def plain(self, task_id: str) -> str:
        return self.cli("task", "view", task_id, "--plain")

    def comments(self, task_id: str) -> list[str]:
        return [str(c["body"]) for c in self.task(task_id)["comments"] or ()]


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path / "plan")


def status(plain: str) -> str:
    """The status in what `backlog task view --plain` printed, without its symbol."""
    found = re.search(r"^Status:.*?([A-Za-z][A-Za-z ]*?)\s*$", plain, re.MULTILINE)
    assert found, f"no status in:\n{plain}"
    return found.group(1)


def link(root: Path, settings: str) -> None:
    """Append a `trackers:` section to aq.yaml and commit it, as a person would."""
    config = root / "aq.yaml"
    config.write_text(config.read_text() + "\ntrackers:\n" + settings)
    subprocess.run(["git", "-C", str(root), "commit", "-qam", "link the tracker"], env=aq_env(),
                   check=True)


def ok(ran: Ran) -> Ran:
    assert ran.returncode == 0, f"exit {ran.returncode}\n{ran.stdout}\n{ran.stderr}"
    return ran


def imported(aq: Aq, *args: str, path: str = WITH) -> list[dict[str, Any]]:
    """`aq from-tracker ARGS --json`, which must succeed: its outcomes."""
    outcomes: list[dict[str, Any]] = json.loads(
        ok(aq("from-tracker", *args, "--json", env={"PATH": path})).stdout)
    return outcomes


def jobs(aq: Aq) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = json.loads(ok(aq("ls", "--json")).stdout)
    return listed


def marks(comments: list[str]) -> list[str]:
    return [mark for body in comments for mark in re.findall(r"\[aq:[0-9a-f]+\]", body)]


@pytest.mark.slow  # real Backlog.md (node) and a real worker: seconds each
def test_tasks_round_trip_through_jobs_and_back(aq: Aq, queue_root: Path, project: Project) -> None:
    """Tasks made with Backlog.md's CLI import once each, run as shell jobs, and come back as
    one comment per move with the task's status following the job; re-importing changes nothing."""
    link(queue_root, "  backlog:\n    path: ../plan\n")  # relative to the queue, backlog on PATH
    good = project.create("Say ok", "echo ok", labels="engine:shell", priority="high")
    bad = project.create("Fail loudly", "echo something broke\necho ---\nexit 3")
    urgent = project.create("Urgent fix", "echo urgent", labels="priority:critical", priority="low")

    first = imported(aq, f"backlog:{good}")
    assert [(o["ref"], o["outcome"]) for o in first] == [(f"backlog:{good}", "added")]
    query = imported(aq, "--query", "backlog")
    assert sorted((o["ref"], o["outcome"]) for o in query) == sorted(
        [(f"backlog:{good}", "unchanged"), (f"backlog:{bad}", "added"), (f"backlog:{urgent}", "added")])
    again = imported(aq, "--query", "backlog")
    assert [o["outcome"] for o in again] == ["unchanged"] * 3

    listed = {data["tracker_item"].removeprefix("backlog:"): data for data in jobs(aq)}
    assert sorted(listed) == sorted((good, bad, urgent))
    assert listed[good]["engine"] == "shell"
    assert listed[good]["priority"] == "high"  # Backlog.md's own priority
    assert listed[urgent]["priority"] == "critical"  # a priority: label wins over Backlog's
    assert listed[bad]["priority"] == "medium"
    job = {task: data["id"] for task, data in listed.items()}

    # all at once (-j 3); a late claim post would still set In Progress (see the test below)
    ran = ok(aq("run", "--drain", "-j", "3", env={"PATH": WITH}, timeout=120))
    assert "3 claimed, 3 finished" in ran.stderr
    stages = {data["id"]: data["stage"] for data in jobs(aq)}
    assert (stages[job[good]], stages[job[bad]]) == ("review", "failed")

    shown = project.plain(good)
    assert status(shown) == "In Progress"
    assert f"aq job `{job[good]}`: building, attempt 1" in shown
    assert f"aq job `{job[good]}`: attempt 1 finished; no verify command; now in review" in shown
    failed = project.plain(bad)
    assert status(failed) == "In Progress"  # left for a person
    assert f"aq job `{job[bad]}`: attempt 1 failed (engine_failed)" in failed
    assert "left for a person" in failed
    assert "something broke" in failed and "engine exited with 3" in failed  # the log tail
    assert "\n- - -\n" in failed  # a line of '---' would be Backlog.md's comment separator

    shipped = ok(aq("ship", job[good], env={"PATH": WITH}))
    assert f"{job[good]}: review -> shipped" in shipped.stdout and not shipped.stderr
    shown = project.plain(good)
    assert status(shown) == "Done"
    assert f"aq job `{job[good]}`: shipped by " in shown

    [after] = imported(aq, f"backlog:{good}")
    assert (after["outcome"], after["job"], after["stage"]) == ("closed", job[good], "shipped")
    assert after["message"].endswith(f"is Done in the tracker; its job {job[good]} is in shipped: "
                                     "nothing changed")
    none_left = ok(aq("from-tracker", "--query", "backlog", env={"PATH": WITH}))
    assert none_left.stdout.strip() == "backlog: no items"  # none is To Do any more
    assert len(jobs(aq)) == 3

    for _ in range(2):
        assert ok(aq("to-tracker", "--all", env={"PATH": WITH})).stdout.strip() == "nothing owed to trackers"
    for task, count in ((good, 3), (bad, 2)):
        comments = project.task(task)["comments"]
        assert len(comments) == count, comments
        assert len(set(marks([c["body"] for c in comments]))) == count  # one post per move, once each
        assert {c["author"] for c in comments} == {"aq"}


@pytest.mark.slow  # real Backlog.md (node) and a real worker: seconds each
def test_a_change_in_backlog_updates_a_waiting_job_only(aq: Aq, queue_root: Path, project: Project,
                                                        tmp_path: Path) -> None:
    """A task edited in Backlog.md updates its job while it waits in the inbox, leaves it alone
    once started, and --new makes a second job linked to the same task (found by absolute
    paths, with backlog off PATH)."""
    link(queue_root, f"  backlog:\n    path: {project.folder}\n    command: [{BACKLOG}]\n")
    task = project.create("Count", "echo one")
    ref = f"backlog:{task}"
    path = off_path(tmp_path)

    [added] = imported(aq, ref, path=path)
    assert added["outcome"] == "added"
    project.cli("task", "edit", task, "-d", "echo two")
    [updated] = imported(aq, ref, path=path)
    assert (updated["outcome"], updated["job"], updated["stage"]) == ("updated", added["job"], "inbox")
    body = json.loads(ok(aq("show", added["job"], "--json")).stdout)["body"]
    assert body.strip() == "echo two"
    assert imported(aq, ref, path=path)[0]["outcome"] == "unchanged"

    ok(aq("run", "--once", env={"PATH": path}, timeout=120))
    assert status(project.plain(task)) == "In Progress"  # the worker found backlog through aq.yaml too
    project.cli("task", "edit", task, "-d", "echo three")
    [started] = imported(aq, ref, path=path)
    assert (started["outcome"], started["job"], started["stage"]) == ("started", added["job"], "review")
    assert "--new" in started["message"]
    body = json.loads(ok(aq("show", added["job"], "--json")).stdout)["body"]
    assert body.strip() == "echo two"

    [second] = imported(aq, ref, "--new", path=path)
    assert second["outcome"] == "added" and second["job"] != added["job"]
    detail = json.loads(ok(aq("show", second["job"], "--json")).stdout)
    assert detail["body"].strip() == "echo three" and detail["tracker_item"] == ref
    assert detail["events"][0].get("also") == added["job"]
    assert sorted(j["tracker_item"] for j in jobs(aq)) == [ref, ref]
    [newest] = imported(aq, ref, path=path)
    assert (newest["outcome"], newest["job"]) == ("unchanged", second["job"])


@pytest.mark.slow  # real Backlog.md (node) and a real worker: seconds each
def test_posts_that_could_not_go_out_are_sent_later_once(aq: Aq, queue_root: Path,
                                                          project: Project) -> None:
    """Without backlog on PATH a worker and a person's ship keep their posts owed and say how to
    install it; `aq to-tracker` sends them later in order, and a send whose record was lost adds
    no second comment."""
    link(queue_root, "  takeover: 0s\n  backlog:\n    path: ../plan\n")
    task = project.create("Say ok", "echo ok")
    [added] = imported(aq, f"backlog:{task}")
    job = added["job"]

    ran = ok(aq("run", "--drain", env={"PATH": WITHOUT}, timeout=120))
    assert "npm install -g backlog.md" in ran.stdout and "anyone else may" in ran.stdout
    shipped = ok(aq("ship", job, env={"PATH": WITHOUT}))
    assert f"{job}: review -> shipped" in shipped.stdout
    [line] = shipped.stderr.strip().splitlines()
    assert "npm install -g backlog.md" in line and f"'aq to-tracker {job}' sends it" in line
    assert project.comments(task) == []

    sent = ok(aq("to-tracker", job, env={"PATH": WITH}))
    assert sent.stdout.count(f"backlog:{task}: sent {job}'s") == 3
    shown = project.plain(task)
    assert status(shown) == "Done"
    assert shown.index("building, attempt 1") < shown.index("now in review") < shown.index("shipped by")

    # lose the record of what was sent, as a crash between sending and recording would
    last = subprocess.run(["git", "log", "-1", "--format=%s"], cwd=queue_root, env=aq_env(),
                          capture_output=True, text=True, check=True).stdout
    assert last.startswith("aq: record tracker posts")
    subprocess.run(["git", "reset", "-q", "--hard", "HEAD~1"], cwd=queue_root, env=aq_env(), check=True)
    resent = ok(aq("to-tracker", "--all", env={"PATH": WITH}))
    assert resent.stdout.count(f"backlog:{task}: sent {job}'s") == 3
    comments = project.comments(task)
    assert len(comments) == 3 and len(set(marks(comments))) == 3


@pytest.mark.slow  # real Backlog.md (node) and a real worker: seconds each
def test_a_task_is_in_progress_after_its_posts_go_out_together(aq: Aq, queue_root: Path,
                                                               project: Project) -> None:
    """A job built while its task's posts could not go out leaves the task In Progress once they
    are sent together (as they are whenever a job finishes before the worker's courier is free)."""
    link(queue_root, "  takeover: 0s\n  backlog:\n    path: ../plan\n")
    task = project.create("Say ok", "echo ok")
    imported(aq, f"backlog:{task}")
    ok(aq("run", "--drain", env={"PATH": WITHOUT}, timeout=120))
    ok(aq("to-tracker", "--all", env={"PATH": WITH}))
    assert len(project.comments(task)) == 2
    assert status(project.plain(task)) == "In Progress"


@pytest.mark.slow  # real Backlog.md (node) and a real worker: seconds each
def test_a_task_reads_its_jobs_moves_in_order(aq: Aq, queue_root: Path, project: Project) -> None:
    """A job shipped while the worker's posts are still owed tells its task building, finished,
    shipped, in that order."""
    link(queue_root, "  takeover: 0s\n  backlog:\n    path: ../plan\n")
    task = project.create("Say ok", "echo ok")
    [added] = imported(aq, f"backlog:{task}")
    ok(aq("run", "--drain", env={"PATH": WITHOUT}, timeout=120))
    ok(aq("ship", added["job"], env={"PATH": WITH}))
    ok(aq("to-tracker", "--all", env={"PATH": WITH}))
    said = [re.sub(r"^aq job `[^`]+`: (\S+ \S+).*", r"\1", c, flags=re.DOTALL)
            for c in project.comments(task)]
    assert said == ["building, attempt", "attempt 1", "shipped by"]


def test_no_backlog_path_is_one_line_and_adds_nothing(aq: Aq) -> None:
    """Without trackers.backlog.path in aq.yaml, an import by reference or by query says so in
    one line, exits 1 and adds no job."""
    for args in (("backlog:TASK-1",), ("--query", "backlog")):
        ran = aq("from-tracker", *args, env={"PATH": WITH})
        assert ran.returncode == 1, ran
        assert ran.stderr.strip().splitlines() == [
            "aq: trackers.backlog.path is not set in aq.yaml: set it to the Backlog.md project's "
            "folder (relative to the queue)"]
    assert jobs(aq) == []


def test_a_missing_project_folder_is_named(aq: Aq, queue_root: Path) -> None:
    """A trackers.backlog.path that is no folder is named in one line, exit 1."""
    link(queue_root, "  backlog:\n    path: ../nowhere\n")
    ran = aq("from-tracker", "backlog:TASK-1", env={"PATH": WITH})
    assert ran.returncode == 1
    [line] = ran.stderr.strip().splitlines()
    assert str(queue_root.parent / "nowhere") in line and "trackers.backlog.path" in line
    assert jobs(aq) == []


def test_an_unknown_task_is_named_and_makes_no_job(aq: Aq, queue_root: Path, project: Project) -> None:
    """A task Backlog.md does not have is named in one line, exit 1, and makes no job; a good one
    named beside it is imported all the same."""
    link(queue_root, "  backlog:\n    path: ../plan\n")
    task = project.create("Say ok", "echo ok")
    ran = aq("from-tracker", "backlog:TASK-99", f"backlog:{task}", env={"PATH": WITH})
    assert ran.returncode == 1
    [line] = ran.stderr.strip().splitlines()
    assert line.startswith("aq: ") and "TASK-99" in line and "not found" in line
    assert f"backlog:{task} -> added " in ran.stdout
    assert [j["tracker_item"] for j in jobs(aq)] == [f"backlog:{task}"]


def test_backlog_off_path_says_how_to_install_it(aq: Aq, queue_root: Path, project: Project) -> None:
    """With no backlog on PATH (and no trackers.backlog.command), an import says how to install
    Backlog.md in one line, exit 1, and adds nothing."""
    link(queue_root, "  backlog:\n    path: ../plan\n")
    project.create("Say ok", "echo ok")
    for args in (("backlog:TASK-1",), ("--query", "backlog")):
        ran = aq("from-tracker", *args, env={"PATH": WITHOUT})
        assert ran.returncode == 1
        [line] = ran.stderr.strip().splitlines()
        assert "not installed" in line and "npm install -g backlog.md" in line
        assert "trackers.backlog.command" in line
    assert jobs(aq) == []


def test_a_bad_task_reference_is_a_usage_error(aq: Aq) -> None:
    """`backlog:` followed by no task id is refused before any tracker is asked: exit 2, one line."""
    ran = aq("from-tracker", "backlog:not a task", env={"PATH": WITHOUT})
    assert ran.returncode == 2
    [line] = ran.stderr.strip().splitlines()
    assert "backlog:TASK-N" in line
