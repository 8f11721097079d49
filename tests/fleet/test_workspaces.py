"""Jobs that work on a project repo (issue 7), end to end with `aq` as a real process: each
attempt in its own worktree on branch aq/<job>, the agent's leftovers committed, the branch
pushed before the job leaves building, `aq diff`, `aq ship` with merge, a retry that goes on
from the pushed branch, and work a killed worker left unpushed rescued by the next one."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers.cli import Ran, aq_env, run_aq
from tests.helpers.git import git, project_repo
from tests.helpers.queue import events

pytestmark = pytest.mark.slow


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A bare project repo whose main branch has one commit (README.md)."""
    return project_repo(tmp_path)


@pytest.fixture
def queue(tmp_path: Path, project: Path) -> Path:
    """A queue whose jobs work on `project`, with worktrees under tmp_path/ws."""
    root = tmp_path / "queue"
    assert run_aq("init", str(root), cwd=tmp_path).returncode == 0
    settings = {"default_engine": "shell", "repo": str(project),
                "workspaces_dir": str(tmp_path / "ws"), "kill_grace": "1s"}
    kept = [line for line in (root / "aq.yaml").read_text().splitlines()
            if line.split(":")[0] not in settings]  # aq's own YAML: `on:` is no boolean there
    (root / "aq.yaml").write_text("\n".join([*kept, yaml.safe_dump(settings)]))
    return root


def add(queue: Path, job_id: str, body: str, **keys: object) -> None:
    front = yaml.safe_dump({"verify": "true", **keys})
    (queue / "queue" / "inbox" / f"{job_id}.md").write_text(f"---\n{front}---\n{body}\n")


def aq(queue: Path, *args: str, timeout: float = 120) -> Ran:
    return run_aq(*args, cwd=queue, timeout=timeout)


def tree(bare: Path, ref: str) -> list[str]:
    return git(bare, "ls-tree", "-r", "--name-only", ref).split()


def worker_until(queue: Path, gate: Path, *args: str) -> subprocess.Popen[bytes]:
    """`aq run ARGS` in a process group of its own, once its job has touched `gate`."""
    worker = subprocess.Popen([sys.executable, "-m", "aq", "run", *args], cwd=queue,
                              env=aq_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    end = time.monotonic() + 60
    while not gate.exists() and time.monotonic() < end and worker.poll() is None:
        time.sleep(0.1)
    if not gate.exists():
        os.killpg(worker.pid, signal.SIGKILL)
        raise AssertionError("the job never reached its gate")
    return worker


AGENT = """set -e
echo committed > committed.txt
git add committed.txt
git -c user.name=agent -c user.email=agent@example.com commit -q -m "the agent's commit"
echo left > left-uncommitted.txt
"""


def test_a_job_works_in_its_own_worktree_and_its_branch_is_pushed(queue: Path, project: Path,
                                                                  tmp_path: Path) -> None:
    """A job's attempt runs in a worktree of the project on aq/<job>; what the agent committed
    and what it left uncommitted are both on the pushed branch; the finished event names the
    branch and its head; the worktree is gone afterwards; `aq diff` shows the change."""
    add(queue, "feature", AGENT)
    ran = aq(queue, "run", "--once")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert sorted(tree(project, "aq/feature")) == ["README.md", "committed.txt",
                                                   "left-uncommitted.txt"]
    assert tree(project, "main") == ["README.md"]
    finished = next(e for e in events(queue, "feature") if e["type"] == "finished")
    assert finished["to"] == "testing"
    assert (finished["branch"], finished["base"], finished["pushed"]) == ("aq/feature", "main", True)
    assert finished["head"] == git(project, "rev-parse", "aq/feature").strip()
    assert list((tmp_path / "ws").glob("*/worktrees/feature-*")) == []
    diff = aq(queue, "diff", "feature")
    assert diff.returncode == 0, diff.stderr
    assert "+committed" in diff.stdout and "+left" in diff.stdout
    shown = json.loads(aq(queue, "show", "feature", "--json").stdout)
    assert shown["branch"] == {"name": "aq/feature", "head": finished["head"], "pushed": True}
    assert f"branch:   aq/feature at {str(finished['head'])[:12]} (pushed" in \
        aq(queue, "show", "feature").stdout
    doctor = json.loads(aq(queue, "doctor", "--json").stdout)
    workspaces = next(c for c in doctor["checks"] if c["name"] == "workspaces")
    assert "1 repo cache(s), 0 worktree(s)" in workspaces["detail"], workspaces


def test_a_job_whose_branch_cannot_be_pushed_waits_in_building_and_says_why(
        queue: Path, project: Path) -> None:
    """The project's remote goes away while the agent works: the job stays in building (the
    work exists on one machine only), a note in its log says why, once; when the remote is
    back the branch is pushed and only then does the job move on."""
    away = project.with_name("project-away.git")
    add(queue, "offline-push", f"echo work > work.txt\nmv {project} {away}\n")
    worker = subprocess.Popen([sys.executable, "-m", "aq", "run", "--once", "--poll", "0.5s"],
                              cwd=queue, env=aq_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60

        def waiting() -> list[dict[str, object]]:
            if not (queue / "queue" / ".events" / "offline-push.jsonl").exists():
                return []  # not claimed yet
            return [e for e in events(queue, "offline-push") if e.get("waiting") == "branch_push"]

        while not waiting() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert waiting(), "no note says why the job waits"
        assert "waiting for branch aq/offline-push" in str(waiting()[0]["why"])
        assert (queue / "queue" / "building" / "offline-push.md").exists()
        time.sleep(1.5)  # a few more failed pushes: still one note
        assert len(waiting()) == 1
        away.rename(project)
        out, _ = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 0, out
    finished = next(e for e in events(queue, "offline-push") if e["type"] == "finished")
    assert (finished["to"], finished["pushed"]) == ("testing", True)
    assert "work.txt" in tree(project, "aq/offline-push")


def test_ship_with_merge_lands_the_branch_in_base_and_a_conflict_is_refused(
        queue: Path, project: Path, tmp_path: Path) -> None:
    """`ship: merge` merges aq/<job> into main and pushes it; a job whose branch conflicts with
    main is refused in one line and stays where it is."""
    add(queue, "clean", "echo clean > clean.txt", ship="merge")
    add(queue, "clash", "echo ours > README.md", ship="merge")
    assert aq(queue, "run", "--drain").returncode == 0
    shipped = aq(queue, "ship", "clean")
    assert shipped.returncode == 0, shipped.stderr
    assert "clean.txt" in tree(project, "main")
    moved = [e for e in events(queue, "clean") if e["type"] == "moved"][-1]
    assert moved["ship"] == "merge" and moved["merged"] == git(project, "rev-parse", "main").strip()

    other = tmp_path / "other"
    git(tmp_path, "clone", "-q", str(project), str(other))
    (other / "README.md").write_text("theirs\n")
    git(other, "commit", "-q", "-am", "someone else changes the README")
    git(other, "push", "-q", "origin", "HEAD:main")
    refused = aq(queue, "ship", "clash")
    assert refused.returncode == 1
    assert len(refused.stderr.strip().splitlines()) == 1 and "README.md" in refused.stderr
    assert (queue / "queue" / "testing" / "clash.md").exists()
    assert git(project, "show", "main:README.md") == "theirs\n"


def test_allowed_scope_judges_the_branch_against_base(queue: Path, project: Path) -> None:
    """allowed-scope is checked on the job's branch against base: a file outside the scope that
    the first attempt wrote counts; once the retry removes it from the branch, it no longer
    does, and the job ships without an override."""
    body = ('if [ "$AQ_ATTEMPT" = 1 ]; then mkdir -p src docs; echo x > src/x.py; '
            'echo d > docs/a.md; else git rm -q src/x.py; fi')
    add(queue, "scoped", body, verify='test "$AQ_ATTEMPT" != 1', retry={"max": 1, "backoff": "1s"},
        **{"allowed-scope": ["docs/**"]})
    ran = aq(queue, "run", "--drain")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    first, second = [e for e in events(queue, "scoped") if e["type"] == "finished"]
    assert (first["out_of_scope"], first["scope"]) == (["src/x.py"], "branch")
    assert (second.get("out_of_scope"), second["scope"], second["to"]) == (None, "branch", "testing")
    assert sorted(tree(project, "aq/scoped")) == ["README.md", "docs/a.md"]
    shipped = aq(queue, "ship", "scoped")
    assert shipped.returncode == 0, shipped.stderr


def test_a_retry_goes_on_from_what_the_last_attempt_pushed(queue: Path, project: Path) -> None:
    """A job whose first attempt fails verify is retried on its branch as pushed: the second
    attempt sees the first one's file, and both attempts' work is on aq/<job>."""
    body = ('if [ -f first.txt ]; then echo second > second.txt; else echo first > first.txt; fi')
    add(queue, "twice", body, verify="test -f second.txt",
        retry={"max": 1, "backoff": "0s", "on": ["verify_failed"]})
    ran = aq(queue, "run", "--drain")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert (queue / "queue" / "testing" / "twice.md").exists()
    assert {"first.txt", "second.txt"} <= set(tree(project, "aq/twice"))


def test_work_a_killed_worker_left_unpushed_is_rescued_by_the_next_worker(
        queue: Path, project: Path, tmp_path: Path) -> None:
    """A worker killed with kill -9 while its agent had committed work leaves the worktree; the
    next worker on that machine pushes the work to aq/<job>-rescued-1, says so in the job's
    event log, and removes the worktree."""
    gate, engine_pid = tmp_path / "started", tmp_path / "engine.pid"
    add(queue, "doomed", f"{AGENT}echo $$ > {engine_pid}\ntouch {gate}\n"
                         '[ "$AQ_ATTEMPT" = 1 ] && sleep 60\n')  # the retry after the rescue: quick
    worker = worker_until(queue, gate, "--once")
    try:
        os.killpg(worker.pid, signal.SIGKILL)  # the worker and its engine (a group of its
        os.killpg(int(engine_pid.read_text()), signal.SIGKILL)  # own), as a crash of the machine would
        worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
    assert list((tmp_path / "ws").glob("*/worktrees/doomed-*")), "the killed worker left no worktree"

    ran = aq(queue, "run", "--once")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "committed.txt" in tree(project, "aq/doomed-rescued-1")
    rescued = [e for e in events(queue, "doomed") if e["type"] == "rescued"]
    assert [e["branch"] for e in rescued] == ["aq/doomed-rescued-1"]
    assert not list((tmp_path / "ws").glob("*/worktrees/doomed-1"))


def test_kill_9_mid_job_then_reclaim_on_the_other_clone_loses_nothing_pushed(
        queue: Path, project: Path, tmp_path: Path) -> None:
    """Two clones of one queue: clone A's worker pushes a first attempt's work, then is killed
    with kill -9 during the second; clone B's worker takes the job back once the lease expires
    and its attempt starts from the branch as pushed (it sees the first attempt's file). What
    the killed attempt had not pushed is rescued by A's next worker to aq/<job>-rescued-1."""
    gate, engine_pid = tmp_path / "second-started", tmp_path / "engine.pid"
    body = (f'if [ "$AQ_ATTEMPT" = 1 ]; then echo one > one.txt\n'
            f'elif [ "$AQ_ATTEMPT" = 2 ]; then echo two > two.txt; git add two.txt; '
            f'git -c user.name=a -c user.email=a@x commit -qm two; echo $$ > {engine_pid}; '
            f'touch {gate}; sleep 60\n'
            f'else test -f one.txt && echo three > three.txt; fi')
    add(queue, "relay", body, verify='test "$AQ_ATTEMPT" != 1',
        retry={"max": 1, "backoff": "0s", "on": ["verify_failed"]})
    with open(queue / "aq.yaml", "a") as config:
        config.write("lease_ttl: 4s\nheartbeat_interval: 1s\n")  # (workspaces_dir: tmp/ws, both)
    git(queue, "add", "-A")
    git(queue, "commit", "-q", "-m", "the job and a short lease")
    remote = tmp_path / "queue-remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    git(queue, "remote", "add", "origin", str(remote))
    git(queue, "push", "-q", "origin", "HEAD")
    other = tmp_path / "clone-b"
    git(tmp_path, "clone", "-q", str(remote), str(other))

    worker = worker_until(queue, gate, "--drain")
    try:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
        if engine_pid.exists():  # the engine runs in a group of its own: as after a crash, it
            with contextlib.suppress(ProcessLookupError):  # would run on; stop it here
                os.killpg(int(engine_pid.read_text()), signal.SIGKILL)
    assert set(tree(project, "aq/relay")) == {"README.md", "one.txt"}  # attempt 1, pushed

    ran = aq(other, "run", "--drain", timeout=120)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    log = events(other, "relay")
    reclaimed = [e for e in log if e["type"] == "finished" and e.get("outcome") == "lease_expired"]
    assert len(reclaimed) == 1
    last = [e for e in log if e["type"] == "finished"][-1]
    assert (last["attempt"], last["to"], last["pushed"]) == (3, "testing", True)
    assert {"one.txt", "three.txt"} <= set(tree(project, "aq/relay"))
    caches = [p for p in (tmp_path / "ws" / "repos").iterdir() if p.is_dir()]
    assert len(caches) == 1, caches  # both clones' workers used the machine's one cache
    assert len(list((tmp_path / "ws").glob("*/worktrees"))) == 2  # each queue its own worktrees

    again = aq(queue, "run", "--drain", timeout=120)  # A's next worker: the left worktree
    assert again.returncode == 0, again.stdout + again.stderr
    assert "two.txt" in tree(project, "aq/relay-rescued-1")


@pytest.mark.skipif(__import__("shutil").which("gh") is not None, reason="gh is installed here")
def test_ship_with_pr_and_no_gh_is_refused_and_the_job_stays(queue: Path) -> None:
    """`ship: pr` on a machine without the GitHub CLI refuses in one line saying what to
    install, and the job stays in testing."""
    add(queue, "wants-pr", "echo pr > pr.txt", ship="pr")
    assert aq(queue, "run", "--once").returncode == 0
    refused = aq(queue, "ship", "wants-pr")
    assert refused.returncode == 1 and "install gh" in refused.stderr, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert (queue / "queue" / "testing" / "wants-pr.md").exists()


@pytest.mark.skipif(__import__("shutil").which("gh") is not None, reason="gh is installed here")
def test_ship_with_pr_and_no_gh_opens_it_through_the_github_api(queue: Path, project: Path,
                                                               tmp_path: Path) -> None:
    """Without gh, `ship: pr` of a job whose repo is on GitHub opens the pull request through
    the API (trackers.github, GITHUB_TOKEN) and records its page; without a token the ship is
    refused in one line and the job stays. The repo is https://github.com/acme/app.git, which
    git resolves to the local project (insteadOf); the API is tests/fake_github.py."""
    from tests.helpers.fake_github import FakeGitHub

    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text(
        f'[url "{project}"]\n\tinsteadOf = https://github.com/acme/app.git\n')
    with FakeGitHub() as gh:
        gh.add_repo("acme/app")
        text = (queue / "aq.yaml").read_text().replace(f"repo: {project}",
                                                       "repo: https://github.com/acme/app.git")
        (queue / "aq.yaml").write_text(text + f"trackers:\n  github:\n    api_url: {gh.url}\n")
        env = {"HOME": str(home), "GITHUB_TOKEN": gh.token or ""}
        add(queue, "wants-pr", "echo pr > pr.txt", ship="pr")
        add(queue, "no-token", "echo t > t.txt", ship="pr")
        ran = run_aq("run", "--drain", cwd=queue, env=env, timeout=120)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        shipped = run_aq("ship", "wants-pr", cwd=queue, env=env)
        assert shipped.returncode == 0, shipped.stderr
        [pull] = gh.pulls("acme/app")
        assert (pull["head"], pull["base"], pull["title"]) == ("aq/wants-pr", "main",
                                                               "echo pr > pr.txt")
        moved = [e for e in events(queue, "wants-pr") if e["type"] == "moved"][-1]
        assert moved["pr"] == f"https://github.com/acme/app/pull/{pull['number']}"
        assert "pr.txt" in tree(project, "aq/wants-pr")
        refused = run_aq("ship", "no-token", cwd=queue, env={"HOME": str(home), "GITHUB_TOKEN": ""})
        assert refused.returncode == 1 and "GITHUB_TOKEN" in refused.stderr, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
        assert (queue / "queue" / "testing" / "no-token.md").exists()


def test_gc_frees_unused_caches_old_logs_and_shipped_branches(queue: Path, project: Path,
                                                              tmp_path: Path) -> None:
    """`aq gc --dry-run` lists and frees nothing; `aq gc` then removes the unused repo cache,
    the logs of a job final for longer than log_retention, and with --branches the aq/<job>
    branch of a shipped job; nothing a running job uses is touched."""
    with (queue / "aq.yaml").open("a") as config:
        config.write("log_retention: 1s\n")
    add(queue, "old", "echo old > old.txt")
    assert aq(queue, "run", "--once").returncode == 0
    assert aq(queue, "ship", "old").returncode == 0
    time.sleep(1.5)  # the job is now final for longer than log_retention
    caches = list((tmp_path / "ws" / "repos").glob("*"))
    assert [c for c in caches if c.is_dir()], "the run left no cache"
    logs = queue / "queue" / ".logs" / "old"
    assert logs.is_dir()

    dry = aq(queue, "gc", "--dry-run", "--older-than", "1s", "--branches", "--json")
    assert dry.returncode == 0, dry.stderr
    kinds = sorted(item["kind"] for item in json.loads(dry.stdout)["freed"])
    assert kinds == ["branch", "cache", "logs"], dry.stdout
    assert logs.is_dir() and "aq/old" in git(project, "branch", "--list", "aq/*")

    done = aq(queue, "gc", "--older-than", "1s", "--branches")
    assert done.returncode == 0, done.stderr
    assert not logs.exists()
    assert "aq/old" not in git(project, "branch", "--list", "aq/*")
    assert not [c for c in (tmp_path / "ws").glob("*/repos/*") if c.is_dir()]
    assert (queue / "queue" / "shipped" / "old.md").exists()


def test_a_ship_with_merge_checks_allowed_scope_before_it_touches_base(queue: Path, project: Path) -> None:
    """`ship: merge` of a job that changed files outside its allowed-scope is refused before
    anything is merged (base is unchanged); with --allow-out-of-scope it merges, and the moved
    event keeps both what the ship did and the override."""
    add(queue, "spill", "mkdir -p src docs; echo x > src/x.py; echo d > docs/a.md", ship="merge",
        **{"allowed-scope": ["docs/**"]})
    assert aq(queue, "run", "--drain").returncode == 0
    base_before = git(project, "rev-parse", "main").strip()
    refused = aq(queue, "ship", "spill")
    assert refused.returncode == 1 and "--allow-out-of-scope" in refused.stderr
    assert git(project, "rev-parse", "main").strip() == base_before
    assert "src/x.py" not in tree(project, "main")
    shipped = aq(queue, "ship", "spill", "--allow-out-of-scope")
    assert shipped.returncode == 0, shipped.stderr
    assert "src/x.py" in tree(project, "main")
    moved = [e for e in events(queue, "spill") if e["type"] == "moved"][-1]
    assert (moved["ship"], moved["branch"], moved["base"]) == ("merge", "aq/spill", "main")
    assert moved["merged"] == git(project, "rev-parse", "main").strip()
    assert (moved["override"], moved["out_of_scope"]) == ("out_of_scope", ["src/x.py"])
