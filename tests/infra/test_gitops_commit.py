"""How aq commits a transaction (aq.infra.gitops.commit_paths, exact): what the index holds
under queue/, on top of HEAD, never a file staged elsewhere or one a person dropped. A big
index (a year's archive) commits through plumbing; both ways must make the same commit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aq.errors import GitError
from aq.infra import gitops
from tests.helpers.git import git

IDENTITY = ["-c", "user.name=aq-test", "-c", "user.email=aq-test@example.com"]


@pytest.fixture(params=["small", "big"])
def repo(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A queue repository with a job in the inbox and a person's work elsewhere; "big" commits
    as an index of a year's archive would (the threshold brought down to this one)."""
    if request.param == "big":
        monkeypatch.setattr(gitops, "BIG_INDEX", 1)
    return make_repo(tmp_path / "q")


def make_repo(root: Path) -> Path:
    for name, text in {"queue/inbox/job-a.md": "a\n", "queue/.events/job-a.jsonl": "{}\n",
                       "queue/archive/2026/01/000/old.md": "old\n", "aq.yaml": "poll: 1s\n",
                       "notes/todo.txt": "mine\n"}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, *IDENTITY, "commit", "-qm", "start")
    return root


def move(root: Path) -> list[str]:
    (root / "queue/building").mkdir(exist_ok=True)
    (root / "queue/inbox/job-a.md").rename(root / "queue/building/job-a.md")
    with (root / "queue/.events/job-a.jsonl").open("a") as events:
        events.write('{"type": "claimed"}\n')
    return ["queue/inbox/job-a.md", "queue/building/job-a.md", "queue/.events/job-a.jsonl"]


def test_a_transaction_commits_its_queue_files_and_nothing_else(repo: Path) -> None:
    (repo / "aq.yaml").write_text("poll: 2s\n")
    git(repo, "add", "aq.yaml")  # a person's staged change: stays staged, uncommitted
    (repo / "queue/inbox/dropped.md").write_text("x\n")  # a person's drop: not aq's to commit
    before = git(repo, "rev-parse", "HEAD").strip()
    assert gitops.commit_paths(repo, move(repo), "aq: claim job-a", IDENTITY, exact=True)
    assert git(repo, "rev-parse", "HEAD~1").strip() == before
    assert git(repo, "log", "-1", "--format=%s%n%an").split() == ["aq:", "claim", "job-a",
                                                                  "aq-test"]
    changed = git(repo, "show", "--no-renames", "--name-status", "--format=", "HEAD").split("\n")
    assert sorted(filter(None, changed)) == ["A\tqueue/building/job-a.md",
                                             "D\tqueue/inbox/job-a.md",
                                             "M\tqueue/.events/job-a.jsonl"]
    status = git(repo, "status", "--porcelain", "-uall").splitlines()
    assert sorted(status) == ["?? queue/inbox/dropped.md", "M  aq.yaml"]
    assert git(repo, "show", "HEAD:queue/archive/2026/01/000/old.md") == "old\n"


def test_a_persons_unstaged_edits_and_deletions_under_queue_stay_out_of_the_commit(
        repo: Path) -> None:
    """A commit is pushed to the whole fleet: a job file a person deleted by hand, or an event
    log they edited, once went in with the next transaction's commit (`git commit -- queue`
    takes the work tree's state of every tracked file under queue/)."""
    (repo / "queue/inbox/job-b.md").write_text("b\n")
    (repo / "queue/.events/job-b.jsonl").write_text("{}\n")
    git(repo, "add", "-A")
    git(repo, *IDENTITY, "commit", "-qm", "job-b")
    (repo / "queue/inbox/job-b.md").unlink()
    (repo / "queue/.events/job-b.jsonl").write_text('{"oops": 1}\n')
    assert gitops.commit_paths(repo, move(repo), "aq: claim job-a", IDENTITY, exact=True)
    assert git(repo, "show", "HEAD:queue/inbox/job-b.md") == "b\n"
    assert git(repo, "show", "HEAD:queue/.events/job-b.jsonl") == "{}\n"
    changed = git(repo, "show", "--no-renames", "--name-only", "--format=", "HEAD").split()
    assert sorted(changed) == ["queue/.events/job-a.jsonl", "queue/building/job-a.md",
                               "queue/inbox/job-a.md"]
    status = git(repo, "status", "--porcelain", "-uall").splitlines()
    assert sorted(status) == [" D queue/inbox/job-b.md", " M queue/.events/job-b.jsonl"]


def test_a_file_git_never_knew_that_the_transaction_moved_on_leaves_nothing_behind(
        repo: Path) -> None:
    """A job file dropped by hand (never committed) and moved by a transaction: its old path
    is known to no commit, so only where it went is committed, with the rest."""
    (repo / "queue/inbox/dropped.md").write_text("x\n")
    (repo / "queue/building").mkdir(exist_ok=True)
    (repo / "queue/inbox/dropped.md").rename(repo / "queue/building/dropped.md")
    paths = ["queue/inbox/dropped.md", "queue/building/dropped.md", *move(repo)]
    assert gitops.commit_paths(repo, paths, "aq: claim", IDENTITY, exact=True)
    assert git(repo, "show", "HEAD:queue/building/dropped.md") == "x\n"
    assert git(repo, "status", "--porcelain", "-uall", "--", "queue") == ""


def test_nothing_changed_is_no_commit(repo: Path) -> None:
    before = git(repo, "rev-parse", "HEAD").strip()
    assert not gitops.commit_paths(repo, ["queue/inbox/job-a.md"], "aq: nothing", IDENTITY,
                                   exact=True)
    assert git(repo, "rev-parse", "HEAD").strip() == before


def test_a_big_index_refuses_to_commit_over_a_head_that_moved(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The plumbing's update-ref is a compare-and-swap, as `git commit`'s own is: a commit
    made (by real git) between its reading HEAD and its swap fails it."""
    repo = make_repo(tmp_path / "q")
    monkeypatch.setattr(gitops, "BIG_INDEX", 1)
    paths = move(repo)
    real = gitops.git

    def meanwhile(root: Path, *args: str, **kwargs: object) -> object:
        if "commit-tree" in args:  # another commit lands between read and swap
            real(root, *IDENTITY, "commit", "-q", "--allow-empty", "-m", "someone else")
        return real(root, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(gitops, "git", meanwhile)
    with pytest.raises(GitError):
        gitops.commit_paths(repo, paths, "aq: claim job-a", IDENTITY, exact=True)
    assert git(repo, "log", "-1", "--format=%s").strip() == "someone else"


def test_a_big_index_is_kept_split_in_version_4_and_still_commits_alike(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once the index is big, git is told to keep it split (each change writes a small file)
    and in version 4; the clone's next commits are made as before."""
    repo = make_repo(tmp_path / "q")
    monkeypatch.setattr(gitops, "BIG_INDEX", 1)
    assert gitops.commit_paths(repo, move(repo), "aq: claim job-a", IDENTITY, exact=True)
    assert git(repo, "config", "core.splitIndex").strip() == "true"
    assert git(repo, "config", "index.version").strip() == "4"
    assert list((repo / ".git").glob("sharedindex.*"))
    (repo / "queue/review").mkdir()
    (repo / "queue/building/job-a.md").rename(repo / "queue/review/job-a.md")
    assert gitops.commit_paths(repo, ["queue/building/job-a.md", "queue/review/job-a.md"],
                               "aq: job-a ok", IDENTITY, exact=True)
    assert git(repo, "status", "--porcelain", "-uall", "--", "queue") == ""
    assert git(repo, "ls-tree", "-r", "--name-only", "HEAD", "queue/review").split() == [
        "queue/review/job-a.md"]


def test_a_clone_that_says_no_split_index_keeps_its_word(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = make_repo(tmp_path / "q")
    git(repo, "config", "core.splitIndex", "false")
    monkeypatch.setattr(gitops, "BIG_INDEX", 1)
    assert gitops.commit_paths(repo, move(repo), "aq: claim job-a", IDENTITY, exact=True)
    assert git(repo, "config", "core.splitIndex").strip() == "false"
    assert not list((repo / ".git").glob("sharedindex.*"))


NAMES = ("a.md", "deep.md", "deep-x", "a", "b.md")  # beside the folder "deep": sorted as "deep/"
FOLDERS = ("queue/inbox", "queue/.logs/a", "queue/.logs/a/deep", "queue/building")


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.tuples(st.sampled_from(FOLDERS), st.sampled_from(NAMES),
                                   st.sampled_from(["write", "append", "remove"])),
                         min_size=1, max_size=6), min_size=1, max_size=3))
def test_a_big_index_commits_the_trees_the_index_would_without_reading_it(
        tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch,
        steps: list[list[tuple[str, str, str]]]) -> None:
    """With a big index, a transaction's files (new, changed, gone; in folders new, nested or
    left empty) are committed without `git write-tree` reading the whole index: the commit's
    tree is the one the index then holds, and queue/ is clean."""
    root = make_repo(tmp_path_factory.mktemp("q") / "q")
    log = root.parent / "git.log"
    monkeypatch.setattr(gitops, "BIG_INDEX", 1)
    monkeypatch.setattr(gitops, "_LOG", str(log))
    for step in steps:
        touched = []
        for folder, name, action in step:
            path = root / folder / name
            if (root / folder).is_file() or path.is_dir():
                continue  # a file where a folder goes, or the reverse: not aq's queue
            if action == "remove":
                path.unlink(missing_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                with path.open("a" if action == "append" else "w") as handle:
                    handle.write(f"{action} {name}\n")
            touched.append(f"{folder}/{name}")
        gitops.commit_paths(root, touched, "aq: a step", IDENTITY, exact=True)
        assert git(root, "write-tree").strip() == git(root, "rev-parse", "HEAD^{tree}").strip()
        assert git(root, "status", "--porcelain", "-uall", "--", "queue") == ""
    calls = [json.loads(line)["args"][0] for line in log.read_text().splitlines()]
    assert "write-tree" not in calls and "mktree" in calls  # only the folders changed, written


def test_an_executable_or_a_link_is_committed_by_the_index(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A path that is no plain file (an executable a person made, a link) is left to the index
    to commit, as every path was before: the commit is the same."""
    root = make_repo(tmp_path / "q")
    log = tmp_path / "git.log"
    monkeypatch.setattr(gitops, "BIG_INDEX", 1)
    monkeypatch.setattr(gitops, "_LOG", str(log))
    script = root / "queue/inbox/run.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    assert gitops.commit_paths(root, ["queue/inbox/run.sh"], "aq: add", IDENTITY, exact=True)
    assert git(root, "ls-tree", "HEAD", "queue/inbox/run.sh").startswith("100755 blob")
    assert git(root, "status", "--porcelain", "-uall", "--", "queue") == ""
    calls = [json.loads(line)["args"][0] for line in log.read_text().splitlines()]
    assert "write-tree" in calls
