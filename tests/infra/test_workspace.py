"""aq.infra.repos (with repocache, rescue and shipping): per-attempt worktrees of a project
repository, with real git and a bare remote."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from aq.errors import GitError
from aq.infra.repocache import cache_dir_for, default_branch, ensure_cache
from aq.infra.repos import (
    Workspace,
    changed_files,
    commit_leftovers,
    commits_since_start,
    open_workspace,
    push_branch,
    remove_workspace,
)
from aq.infra.rescue import rescue_stale
from aq.infra.shipping import diff_against_base, merge_into_base
from tests.helpers.git import IDENTITY, git_in
from tests.helpers.queue import write

REPO = Path(__file__).resolve().parents[2]




def files_on(project: Path, ref: str) -> list[str]:
    return git_in(project, "ls-tree", "-r", "--name-only", ref).split()


def tip(project: Path, ref: str) -> str | None:
    done = subprocess.run(["git", "rev-parse", "-q", "--verify", f"refs/heads/{ref}"], cwd=project,
                          capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


@pytest.fixture(autouse=True)
def no_git_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("GIT_"):
            monkeypatch.delenv(key)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A bare 'project' repository on branch main with one commit."""
    seed = tmp_path / "seed"
    seed.mkdir()
    git_in(seed, "init", "-q", "-b", "main")
    write(seed, "README.md", "project\n")
    write(seed, ".gitignore", "*.tmp\n")
    git_in(seed, "add", "-A")
    git_in(seed, "commit", "-q", "-m", "start")
    bare = tmp_path / "project.git"
    git_in(tmp_path, "clone", "-q", "--bare", str(seed), str(bare))
    return bare


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """This machine's workspaces folder."""
    return tmp_path / "workspaces"


def open_ws(project: Path, root: Path, job: str = "job-1", attempt: int = 1,
            from_base: bool = False, base: str | None = None) -> Workspace:
    return open_workspace(str(project), job, attempt, root=root, base=base, from_base=from_base)


def do_work(ws: Workspace) -> str:
    """What an agent does: one file committed, one left uncommitted, one ignored."""
    write(ws.path, "src/committed.py", "print('committed')\n")
    git_in(ws.path, "add", "-A")
    git_in(ws.path, "commit", "-q", "-m", "agent's own commit")
    write(ws.path, "notes/uncommitted.md", "left behind\n")
    write(ws.path, "scratch.tmp", "ignored\n")
    leftover = commit_leftovers(ws, "aq: leftovers of job-1 attempt 1", IDENTITY)
    assert leftover is not None
    return leftover


# --- the cache --------------------------------------------------------------------------------


def test_cache_dir_is_stable_readable_and_distinct(tmp_path: Path) -> None:
    """A repository's cache folder is the same for the same repository, whichever queue asks,
    readable, and never shows a token from its URL."""
    url = "https://user:s3cret@github.com/acme/widgets.git"
    first = cache_dir_for(url, tmp_path / "queue-a")
    assert first == cache_dir_for(url + "/", tmp_path / "queue-a")
    assert first == cache_dir_for(url, tmp_path / "queue-b")  # one cache per machine, any queue
    assert first.parent == tmp_path / "repos"
    assert first.name.startswith("acme-widgets-")
    assert "s3cret" not in str(first)
    assert cache_dir_for("https://github.com/acme/other.git", tmp_path) != first
    assert cache_dir_for("git@github.com:acme/widgets.git", tmp_path).name.startswith("acme-widgets-")


def test_ensure_cache_clones_once_then_fetches(project: Path, root: Path, tmp_path: Path) -> None:
    """The first call clones the repository; a later one fetches what was pushed since."""
    cache = ensure_cache(str(project), root)
    assert default_branch(cache) == "main"
    clone = tmp_path / "person"
    git_in(tmp_path, "clone", "-q", str(project), str(clone))
    write(clone, "new.txt", "new\n")
    git_in(clone, "add", "-A")
    git_in(clone, "commit", "-q", "-m", "new")
    git_in(clone, "push", "-q", "origin", "HEAD:main")
    assert ensure_cache(str(project), root) == cache
    assert git_in(cache, "rev-parse", "refs/remotes/origin/main").strip() == tip(project, "main")


def test_a_missing_repository_is_one_clear_error(tmp_path: Path, root: Path) -> None:
    """Cloning a repository that is not there raises GitError naming it, and leaves no cache."""
    missing = tmp_path / "nowhere.git"
    with pytest.raises(GitError, match=r"cannot clone .*nowhere\.git"):
        ensure_cache(str(missing), root)
    # nothing is left of the failed clone (a half-made `<cache>.new` stayed there until the next)
    cache = cache_dir_for(str(missing), root)
    assert sorted(p.name for p in cache.parent.iterdir()) == [f"{cache.name}.lock"]
    assert not cache_dir_for(str(missing), root).exists()


def test_an_unknown_base_is_refused(project: Path, root: Path) -> None:
    """A base branch the repository lacks raises GitError naming the branch."""
    with pytest.raises(GitError, match="no branch 'develop'"):
        open_ws(project, root, base="develop")


# --- an attempt ------------------------------------------------------------------------------


def test_leftovers_are_committed_and_pushed_to_the_job_branch(project: Path, root: Path) -> None:
    """The agent's commit and its uncommitted files (not ignored ones) land on aq/<job> at origin."""
    ws = open_ws(project, root)
    assert ws.branch == "aq/job-1" and ws.base == "main" and ws.start == tip(project, "main")
    assert ws.path == root.resolve() / "worktrees" / "job-1-1"
    leftover = do_work(ws)
    assert commit_leftovers(ws, "nothing more", IDENTITY) is None
    assert len(commits_since_start(ws)) == 2 and commits_since_start(ws)[-1] == leftover
    assert changed_files(ws) == ["notes/uncommitted.md", "src/committed.py"]
    assert push_branch(ws) is True
    assert tip(project, "aq/job-1") == leftover
    assert files_on(project, "aq/job-1") == [".gitignore", "README.md", "notes/uncommitted.md",
                                             "src/committed.py"]


def test_a_retry_starts_from_the_pushed_branch(project: Path, root: Path) -> None:
    """The next attempt's worktree holds what the previous attempt pushed."""
    first = open_ws(project, root)
    pushed = do_work(first)
    assert push_branch(first)
    remove_workspace(first)
    second = open_ws(project, root, attempt=2)
    assert second.start == pushed
    assert (second.path / "notes" / "uncommitted.md").read_text() == "left behind\n"
    assert commits_since_start(second) == []


def test_retry_from_base_starts_clean_and_replaces_the_branch(project: Path, root: Path) -> None:
    """With from_base the attempt starts at base, and its push replaces the earlier attempt's work."""
    first = open_ws(project, root)
    do_work(first)
    assert push_branch(first)
    remove_workspace(first)
    again = open_ws(project, root, attempt=2, from_base=True)
    assert again.start == tip(project, "main")
    assert not (again.path / "src").exists()
    write(again.path, "fresh.txt", "fresh\n")
    commit_leftovers(again, "aq: leftovers of job-1 attempt 2", IDENTITY)
    assert push_branch(again)
    assert files_on(project, "aq/job-1") == [".gitignore", "README.md", "fresh.txt"]


def test_push_reports_false_when_another_attempt_pushed_more(project: Path, tmp_path: Path) -> None:
    """A push is refused (False, not an error) when origin's branch has commits this attempt lacks."""
    here = open_ws(project, tmp_path / "machine-a")
    there = open_ws(project, tmp_path / "machine-b", attempt=2)
    do_work(there)
    assert push_branch(there)
    write(here.path, "late.txt", "late\n")
    commit_leftovers(here, "late", IDENTITY)
    assert push_branch(here) is False
    assert "late.txt" not in files_on(project, "aq/job-1")


def test_jobs_on_one_repository_open_side_by_side(project: Path, root: Path) -> None:
    """Several jobs on the same repository open, commit and push at once from several threads."""
    def run(job: str) -> Workspace:
        ws = open_ws(project, root, job=job)
        write(ws.path, f"{job}.txt", job)
        commit_leftovers(ws, f"aq: {job}", IDENTITY)
        assert push_branch(ws)
        return ws

    jobs = [f"job-{n}" for n in range(6)]
    with ThreadPoolExecutor(len(jobs)) as pool:
        done = list(pool.map(run, jobs))
    assert len({ws.path for ws in done}) == len(jobs)
    for job in jobs:
        assert f"{job}.txt" in files_on(project, f"aq/{job}")


def test_remove_workspace_frees_the_folder(project: Path, root: Path) -> None:
    """Removing a workspace deletes its folder and git's record of it, so the path can be reused."""
    ws = open_ws(project, root)
    write(ws.path, "dirty.txt", "never committed\n")
    remove_workspace(ws)
    assert not ws.path.exists()
    assert str(ws.path) not in git_in(ws.cache, "worktree", "list")
    again = open_ws(project, root)
    assert again.path == ws.path and not (again.path / "dirty.txt").exists()


def test_a_stale_worktree_at_the_same_path_is_replaced(project: Path, root: Path) -> None:
    """Opening an attempt whose folder is left over (even a plain folder) starts afresh there."""
    path = root / "worktrees" / "job-1-1"
    path.mkdir(parents=True)
    write(path, "junk.txt", "junk\n")
    ws = open_ws(project, root)
    assert not (ws.path / "junk.txt").exists() and (ws.path / "README.md").is_file()


# --- after a worker died -------------------------------------------------------------------------


def test_rescue_pushes_unpushed_work_and_removes_the_worktree(project: Path, root: Path) -> None:
    """A dead job's worktree with unpushed work goes to aq/<job>-rescued-1 at origin and is removed."""
    ws = open_ws(project, root)
    write(ws.path, "src/committed.py", "committed\n")
    git_in(ws.path, "add", "-A")
    git_in(ws.path, "commit", "-q", "-m", "agent's commit")
    write(ws.path, "half-done.md", "uncommitted\n")
    assert rescue_stale(root, lambda job: job == "job-1", IDENTITY) == []  # live: kept
    assert ws.path.is_dir()
    assert rescue_stale(root, lambda job: False, IDENTITY) == [("job-1", "aq/job-1-rescued-1")]
    assert not ws.path.exists()
    assert {"half-done.md", "src/committed.py"} <= set(files_on(project, "aq/job-1-rescued-1"))
    assert tip(project, "aq/job-1") is None
    message = git_in(project, "log", "-1", "--format=%s", "aq/job-1-rescued-1")
    assert "job-1" in message and "attempt 1" in message

    second = open_ws(project, root, attempt=2)
    write(second.path, "more.md", "more\n")
    assert rescue_stale(root, lambda job: False, IDENTITY) == [("job-1", "aq/job-1-rescued-2")]


def test_rescue_of_a_worktree_with_nothing_unpushed_only_removes_it(project: Path, root: Path) -> None:
    """A dead job's worktree whose work is all at origin is removed, with no rescued branch."""
    ws = open_ws(project, root)
    do_work(ws)
    assert push_branch(ws)
    assert rescue_stale(root, lambda job: False, IDENTITY) == [("job-1", "")]
    assert not ws.path.exists()
    assert git_in(project, "branch", "--list", "aq/job-1-rescued-*") == ""


def test_rescue_clears_a_lock_the_dead_agent_left(project: Path, root: Path) -> None:
    """An index.lock left in a dead job's worktree does not stop its work from being rescued."""
    ws = open_ws(project, root)
    write(ws.path, "half-done.md", "uncommitted\n")
    git_dir = Path(git_in(ws.path, "rev-parse", "--absolute-git-dir").strip())
    (git_dir / "index.lock").write_text("")
    assert rescue_stale(root, lambda job: False, IDENTITY) == [("job-1", "aq/job-1-rescued-1")]
    assert "half-done.md" in files_on(project, "aq/job-1-rescued-1")


def test_rescue_spares_a_worktree_another_live_process_opened(project: Path, root: Path) -> None:
    """A worktree opened by another process still running is left alone, whatever `live` says,
    and rescued once that process is gone."""
    script = ("import sys; from pathlib import Path; from aq.infra.repos import open_workspace; "
              "open_workspace(sys.argv[1], 'other-job', 1, root=Path(sys.argv[2]), base=None, "
              "from_base=False); print('open', flush=True); sys.stdin.read()")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env["PYTHONPATH"] = str(REPO)
    with subprocess.Popen([sys.executable, "-c", script, str(project), str(root)], env=env,
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as other:
        assert other.stdout is not None and other.stdout.readline() == "open\n"
        path = root / "worktrees" / "other-job-1"
        write(path, "theirs.md", "in progress\n")
        assert rescue_stale(root, lambda job: False, IDENTITY) == []
        assert (path / "theirs.md").is_file()
        other.communicate("")
    assert rescue_stale(root, lambda job: False, IDENTITY) == [("other-job",
                                                                "aq/other-job-rescued-1")]


def test_rescue_leaves_folders_that_are_no_worktree(root: Path) -> None:
    """A folder under worktrees/ that git cannot read as a worktree is left for a person."""
    odd = root / "worktrees" / "odd-1"
    odd.mkdir(parents=True)
    write(odd, "keep.txt", "mine\n")
    assert rescue_stale(root, lambda job: False, IDENTITY) == []
    assert (odd / "keep.txt").is_file()


def test_a_new_attempt_detaches_an_old_worktree_of_the_job(project: Path, root: Path) -> None:
    """An attempt opens while an earlier one's worktree still holds the branch; the earlier
    work survives for rescue."""
    old = open_ws(project, root)
    write(old.path, "old.md", "old work\n")
    new = open_ws(project, root, attempt=2)
    assert git_in(new.path, "branch", "--show-current").strip() == "aq/job-1"
    assert (old.path / "old.md").is_file()
    rescued = rescue_stale(root, lambda job: False, IDENTITY)
    assert ("job-1", "aq/job-1-rescued-1") in rescued
    assert "old.md" in files_on(project, "aq/job-1-rescued-1")


# --- reviewing and shipping ----------------------------------------------------------------------


def test_diff_against_base_shows_the_change(project: Path, root: Path) -> None:
    """The diff of a pushed job branch against its base shows what the job added."""
    ws = open_ws(project, root)
    do_work(ws)
    assert push_branch(ws)
    diff = diff_against_base(ws.cache, ws.branch, "main")
    assert "+++ b/notes/uncommitted.md" in diff and "+left behind" in diff
    assert "scratch.tmp" not in diff
    with pytest.raises(GitError, match="no branch 'aq/nothing'"):
        diff_against_base(ws.cache, "aq/nothing", "main")


def test_merge_into_base_lands_in_main(project: Path, root: Path) -> None:
    """Merging a job branch makes a merge commit on main at origin holding the job's files."""
    ws = open_ws(project, root)
    do_work(ws)
    assert push_branch(ws)
    before = tip(project, "main")
    merged = merge_into_base(str(project), root, ws.branch, "main", "aq: ship job-1", IDENTITY)
    assert tip(project, "main") == merged
    parents = git_in(project, "log", "-1", "--format=%P", "main").split()
    assert parents == [before, tip(project, "aq/job-1")]
    assert git_in(project, "log", "-1", "--format=%s", "main").strip() == "aq: ship job-1"
    assert "notes/uncommitted.md" in files_on(project, "main")
    assert not any((root / "merges").iterdir())


def test_merging_an_already_merged_branch_changes_nothing(project: Path, root: Path) -> None:
    """Merging a branch that main already holds returns main's tip and pushes nothing."""
    ws = open_ws(project, root)
    do_work(ws)
    assert push_branch(ws)
    merged = merge_into_base(str(project), root, ws.branch, "main", "aq: ship job-1", IDENTITY)
    again = merge_into_base(str(project), root, ws.branch, "main", "aq: ship job-1", IDENTITY)
    assert again == merged == tip(project, "main")


def test_a_conflicting_merge_is_refused_and_main_is_unchanged(project: Path, root: Path,
                                                              tmp_path: Path) -> None:
    """A merge that conflicts raises GitError naming the file, and leaves main as it was."""
    ws = open_ws(project, root)
    write(ws.path, "README.md", "the job's version\n")
    commit_leftovers(ws, "aq: job-1", IDENTITY)
    assert push_branch(ws)
    clone = tmp_path / "person"
    git_in(tmp_path, "clone", "-q", str(project), str(clone))
    write(clone, "README.md", "someone else's version\n")
    git_in(clone, "commit", "-q", "-am", "meanwhile")
    git_in(clone, "push", "-q", "origin", "HEAD:main")
    before = tip(project, "main")
    conflict = r"aq/job-1 does not merge cleanly into main \(conflicts in README\.md\)"
    with pytest.raises(GitError, match=conflict):
        merge_into_base(str(project), root, ws.branch, "main", "aq: ship job-1", IDENTITY)
    assert tip(project, "main") == before
    assert not any((root / "merges").iterdir())
