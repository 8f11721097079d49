"""aq.infra.scope: what a run changed in a real git work tree, and which of those paths its globs allow."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aq.infra.scope import TreeMark, changed_since, check_globs, mark_tree, outside_scope
from tests.helpers.git import git_in
from tests.helpers.queue import write


def commit_all(root: Path, message: str = "work") -> None:
    git_in(root, "add", "-A")
    git_in(root, "commit", "-q", "-m", message)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A work tree with one commit holding a few files."""
    root = tmp_path / "repo"
    root.mkdir()
    git_in(root, "init", "-q", "-b", "main")
    for path in ("README.md", "src/app.py", "src/util.py", "docs/guide.md"):
        write(root, path, f"{path}\n")
    commit_all(root, "start")
    return root


def marked(cwd: Path) -> TreeMark:
    mark = mark_tree(cwd)
    assert mark is not None
    return mark


def base_of(mark: TreeMark, cwd: Path) -> str:
    """The job cwd relative to the work tree root, the way a caller computes `base`."""
    rel = Path(os.path.relpath(cwd.resolve(), mark.root)).as_posix()
    return "" if rel == "." else rel


# --- what changed ---------------------------------------------------------------------------


def test_a_run_that_changes_nothing_reports_nothing(repo: Path) -> None:
    """A clean tree left clean gives no changed paths."""
    mark = marked(repo)
    assert mark.root == repo.resolve()
    assert mark.head == git_in(repo, "rev-parse", "HEAD").strip()
    assert mark.dirty == frozenset()
    assert changed_since(mark) == []


def test_modified_added_deleted_and_untracked_files_are_reported(repo: Path) -> None:
    """Unstaged edits, staged new files, deletions and untracked files all count as changes."""
    mark = marked(repo)
    write(repo, "src/app.py", "edited\n")
    write(repo, "src/new.py", "new\n")
    git_in(repo, "add", "src/new.py")
    (repo / "docs/guide.md").unlink()
    write(repo, "notes/todo.txt", "untracked\n")
    assert changed_since(mark) == ["docs/guide.md", "notes/todo.txt", "src/app.py", "src/new.py"]


def test_a_staged_deletion_is_reported(repo: Path) -> None:
    """`git rm` of a tracked file counts as changing it."""
    mark = marked(repo)
    git_in(repo, "rm", "-q", "src/util.py")
    assert changed_since(mark) == ["src/util.py"]


def test_a_commit_made_during_the_run_is_reported(repo: Path) -> None:
    """Files changed in a commit the agent made are changes, though the tree is clean again."""
    mark = marked(repo)
    write(repo, "src/app.py", "edited\n")
    write(repo, "CHANGELOG.md", "new\n")
    commit_all(repo)
    assert git_in(repo, "status", "--porcelain") == ""
    assert changed_since(mark) == ["CHANGELOG.md", "src/app.py"]


def test_several_commits_and_leftover_edits_are_all_reported(repo: Path) -> None:
    """Every commit since the mark counts, and so do edits left uncommitted after them."""
    mark = marked(repo)
    write(repo, "src/app.py", "one\n")
    commit_all(repo, "one")
    (repo / "docs/guide.md").unlink()
    commit_all(repo, "two")
    write(repo, "src/third.py", "three\n")
    commit_all(repo, "three")
    write(repo, "README.md", "uncommitted\n")
    assert changed_since(mark) == ["README.md", "docs/guide.md", "src/app.py", "src/third.py"]


def test_a_file_dirty_before_and_untouched_is_not_reported(repo: Path) -> None:
    """A person's uncommitted edits that the run leaves alone are not the run's changes."""
    write(repo, "src/app.py", "the person's edit\n")
    write(repo, "scratch.txt", "the person's notes\n")
    (repo / "docs/guide.md").unlink()
    mark = marked(repo)
    assert mark.dirty == {"src/app.py", "scratch.txt", "docs/guide.md"}
    assert mark.fingerprints["docs/guide.md"] == ""
    write(repo, "src/util.py", "the run's edit\n")
    assert changed_since(mark) == ["src/util.py"]


def test_a_file_dirty_before_and_changed_again_is_reported(repo: Path) -> None:
    """A file already modified or untracked before the run is still caught when the run edits it."""
    write(repo, "src/app.py", "the person's edit\n")
    write(repo, "scratch.txt", "the person's notes\n")
    mark = marked(repo)
    write(repo, "src/app.py", "the run's edit on top\n")
    with (repo / "scratch.txt").open("a") as file:
        file.write("and the run's line\n")
    assert changed_since(mark) == ["scratch.txt", "src/app.py"]


def test_a_dirty_file_the_run_reverts_or_deletes_is_reported(repo: Path) -> None:
    """Throwing away a person's uncommitted edit (checkout, rm) is a change the run made."""
    write(repo, "src/app.py", "the person's edit\n")
    write(repo, "scratch.txt", "the person's notes\n")
    mark = marked(repo)
    git_in(repo, "checkout", "--", "src/app.py")
    (repo / "scratch.txt").unlink()
    assert changed_since(mark) == ["scratch.txt", "src/app.py"]


def test_a_deleted_file_the_run_restores_is_reported(repo: Path) -> None:
    """A file missing before the run and back afterwards changed during the run."""
    (repo / "src/util.py").unlink()
    mark = marked(repo)
    git_in(repo, "checkout", "--", "src/util.py")
    assert changed_since(mark) == ["src/util.py"]


def test_committing_a_dirty_file_unchanged_is_reported(repo: Path) -> None:
    """A person's pending edit that the agent swept into its own commit counts as changed."""
    write(repo, "src/app.py", "the person's edit\n")
    mark = marked(repo)
    commit_all(repo)
    assert changed_since(mark) == ["src/app.py"]


def test_a_committed_rename_reports_both_paths(repo: Path) -> None:
    """A rename counts as a change to the old path and to the new one."""
    mark = marked(repo)
    (repo / "lib").mkdir()
    git_in(repo, "mv", "src/util.py", "lib/helpers.py")
    commit_all(repo)
    assert changed_since(mark) == ["lib/helpers.py", "src/util.py"]


def test_a_staged_rename_reports_both_paths(repo: Path) -> None:
    """An uncommitted `git mv` also counts as both paths."""
    mark = marked(repo)
    git_in(repo, "mv", "docs/guide.md", "docs/manual.md")
    assert changed_since(mark) == ["docs/guide.md", "docs/manual.md"]


def test_ignored_files_are_not_reported(repo: Path) -> None:
    """Files .gitignore covers (build output, caches) are not changes."""
    write(repo, ".gitignore", "build/\n*.log\n")
    commit_all(repo)
    mark = marked(repo)
    write(repo, "build/out.bin", "binary\n")
    write(repo, "src/run.log", "log\n")
    write(repo, "src/app.py", "edited\n")
    assert changed_since(mark) == ["src/app.py"]


def test_odd_file_names_come_back_as_they_are(repo: Path) -> None:
    """Names with spaces, quotes and non-ASCII letters are reported unquoted."""
    mark = marked(repo)
    names = ["docs/a file.md", 'src/"quoted".py', "src/Ünïcode-名前.txt"]
    for name in names:
        write(repo, name, "x\n")
    assert changed_since(mark) == sorted(names)


def test_a_reset_to_an_older_commit_reports_what_it_undid(repo: Path) -> None:
    """An agent that resets HEAD backwards changed the files the dropped commit had changed."""
    write(repo, "src/app.py", "second version\n")
    write(repo, "src/extra.py", "extra\n")
    commit_all(repo, "second")
    mark = marked(repo)
    git_in(repo, "reset", "-q", "--hard", "HEAD~1")
    assert changed_since(mark) == ["src/app.py", "src/extra.py"]


def test_a_switch_to_an_unrelated_commit_is_compared_by_tree(repo: Path) -> None:
    """HEAD moved to a commit that is no descendant: the two trees are compared anyway."""
    mark = marked(repo)
    git_in(repo, "checkout", "-q", "--orphan", "other")
    git_in(repo, "rm", "-q", "-r", "--cached", "docs", "src")
    for path in ("docs", "src"):
        subprocess.run(["rm", "-rf", str(repo / path)], check=True)
    write(repo, "README.md", "other history\n")
    commit_all(repo, "unrelated")
    assert changed_since(mark) == ["README.md", "docs/guide.md", "src/app.py", "src/util.py"]


def test_a_reset_that_keeps_the_files_still_reports_them(repo: Path) -> None:
    """A soft reset leaves the undone commit's files staged: they count as changed."""
    write(repo, "src/app.py", "second version\n")
    commit_all(repo, "second")
    mark = marked(repo)
    git_in(repo, "reset", "-q", "--soft", "HEAD~1")
    assert changed_since(mark) == ["src/app.py"]


def test_outside_a_git_work_tree_there_is_no_mark(tmp_path: Path) -> None:
    """A cwd in no git work tree (or missing) cannot be checked: mark_tree says None, not an error."""
    plain = tmp_path / "plain"
    plain.mkdir()
    assert mark_tree(plain) is None
    assert mark_tree(tmp_path / "missing") is None


def test_inside_the_git_directory_there_is_no_mark(repo: Path) -> None:
    """The .git folder itself is no work tree."""
    assert mark_tree(repo / ".git") is None


def test_a_repository_with_no_commits_yet(tmp_path: Path) -> None:
    """Before the first commit the mark has no head; new, committed and untouched files are told apart."""
    root = tmp_path / "fresh"
    root.mkdir()
    git_in(root, "init", "-q", "-b", "main")
    write(root, "kept.txt", "the person's file\n")
    mark = marked(root)
    assert mark.head is None
    assert mark.dirty == {"kept.txt"}
    assert changed_since(mark) == []
    write(root, "new.txt", "the run's file\n")
    assert changed_since(mark) == ["new.txt"]
    git_in(root, "add", "new.txt")
    git_in(root, "commit", "-q", "-m", "first")
    assert changed_since(mark) == ["new.txt"]


def test_the_first_commit_reports_every_file_it_adds(tmp_path: Path) -> None:
    """A run that makes a repository's first commit changed every file in it."""
    root = tmp_path / "fresh"
    root.mkdir()
    git_in(root, "init", "-q", "-b", "main")
    mark = marked(root)
    write(root, "a.txt", "a\n")
    write(root, "dir/b.txt", "b\n")
    commit_all(root, "first")
    assert changed_since(mark) == ["a.txt", "dir/b.txt"]


def test_a_cwd_in_a_subfolder_checks_globs_relative_to_it(repo: Path) -> None:
    """The mark covers the whole work tree; globs are relative to the job's cwd, and paths outside it are out."""
    cwd = repo / "src"
    mark = marked(cwd)
    assert mark.root == repo.resolve()
    base = base_of(mark, cwd)
    assert base == "src"
    write(repo, "src/app.py", "edited\n")
    write(repo, "src/tests/test_app.py", "new\n")
    write(repo, "README.md", "edited\n")
    write(repo, "srcx/app.py", "a sibling that merely starts the same\n")
    changed = changed_since(mark)
    assert changed == ["README.md", "src/app.py", "src/tests/test_app.py", "srcx/app.py"]
    assert outside_scope(changed, ["*.py"], base) == ["README.md", "src/tests/test_app.py",
                                                       "srcx/app.py"]
    assert outside_scope(changed, ["**"], base) == ["README.md", "srcx/app.py"]
    assert outside_scope(changed, ["tests/**", "app.py"], base) == ["README.md", "srcx/app.py"]


def test_the_job_cwd_may_be_the_work_tree_root(repo: Path) -> None:
    """At the root, base is empty and globs are relative to the top level."""
    mark = marked(repo)
    assert base_of(mark, repo) == ""
    write(repo, "docs/guide.md", "edited\n")
    write(repo, "src/app.py", "edited\n")
    assert outside_scope(changed_since(mark), ["docs/**"]) == ["src/app.py"]


def test_the_work_tree_gone_is_a_git_error(repo: Path) -> None:
    """A run that deletes the repository leaves nothing to compare: a GitError says so."""
    from aq.errors import GitError

    mark = marked(repo)
    subprocess.run(["rm", "-rf", str(repo)], check=True)
    with pytest.raises(GitError, match="no longer a git work tree"):
        changed_since(mark)


# --- which changes the globs allow ----------------------------------------------------------


def test_glob_examples() -> None:
    """The documented glob forms allow what the docstring says and nothing else."""
    paths = ["README.md", "docs/guide.md", "docs/api/index.md", "src/app.py", "src/a/b/c.py",
             "a/b", "a/x/b", "a/x/y/b", ".env", "notes.txt"]

    def allowed(*globs: str) -> list[str]:
        out = outside_scope(paths, globs)
        return [path for path in paths if path not in out]

    assert allowed("*.md") == ["README.md"]
    assert allowed("**/*.md") == ["README.md", "docs/guide.md", "docs/api/index.md"]
    assert allowed("docs/**") == ["docs/guide.md", "docs/api/index.md"]
    assert allowed("docs/") == ["docs/guide.md", "docs/api/index.md"]
    assert allowed("docs/*") == ["docs/guide.md"]
    assert allowed("src/**/*.py") == ["src/app.py", "src/a/b/c.py"]
    assert allowed("a/**/b") == ["a/b", "a/x/b", "a/x/y/b"]
    assert allowed("*") == ["README.md", ".env", "notes.txt"]
    assert allowed("?env") == [".env"]
    assert allowed("./src/*.py") == ["src/app.py"]
    assert allowed(".") == paths
    assert allowed("**") == paths
    assert allowed("src/app**") == ["src/app.py"]  # `**` inside a segment is a plain `*`
    assert allowed("[ab]/b") == []  # no character classes: brackets are literal
    assert allowed("README.MD") == []  # case-sensitive


def test_no_globs_allow_nothing() -> None:
    """An empty allowed-scope puts every changed path outside it."""
    assert outside_scope(["a.py", "b/c.py"], []) == ["a.py", "b/c.py"]


def test_an_empty_glob_allows_nothing() -> None:
    """The empty string is a glob that matches no path."""
    assert outside_scope(["a.py"], [""]) == ["a.py"]


def test_a_single_glob_string_is_one_glob() -> None:
    """A glob passed as a bare string is taken as one glob, not as its characters."""
    assert outside_scope(["src/a.py", "b.py"], "src/**") == ["b.py"]


def test_outside_scope_keeps_input_order() -> None:
    """The paths outside come back in the order given."""
    assert outside_scope(["z.md", "a.md", "m/x.md"], ["m/**"]) == ["z.md", "a.md"]


SEGMENT = st.text(alphabet="ab.-_ Z7*?[]é", min_size=1, max_size=4).filter(
    lambda s: s not in (".", ".."))
PATH = st.lists(SEGMENT, min_size=1, max_size=5).map("/".join)
LITERAL_SEGMENT = SEGMENT.filter(lambda s: "*" not in s and "?" not in s)
LITERAL_PATH = st.lists(LITERAL_SEGMENT, min_size=1, max_size=4).map("/".join)


def allows(glob: str, path: str, base: str = "") -> bool:
    return outside_scope([path], [glob], base) == []


@given(PATH)
def test_double_star_allows_every_path(path: str) -> None:
    """`**` allows any path under the cwd."""
    assert allows("**", path)


@given(LITERAL_PATH, PATH)
def test_dir_double_star_allows_exactly_the_paths_under_dir(directory: str, path: str) -> None:
    """`dir/**` allows a path if and only if it starts with `dir/`."""
    for candidate in (path, f"{directory}/{path}"):
        assert allows(f"{directory}/**", candidate) == candidate.startswith(f"{directory}/")


@given(LITERAL_PATH, PATH)
def test_a_literal_glob_allows_only_itself(glob: str, path: str) -> None:
    """A glob with no wildcard allows that one path and no other."""
    assert allows(glob, glob)
    assert allows(glob, path) == (path == glob)


@given(st.integers(min_value=1, max_value=4), PATH)
def test_star_never_crosses_a_slash(depth: int, path: str) -> None:
    """A glob of n `*` segments allows exactly the paths of n segments."""
    assert allows("/".join(["*"] * depth), path) == (path.count("/") + 1 == depth)


@given(LITERAL_SEGMENT, PATH)
def test_double_star_slash_name_allows_that_name_at_any_depth(name: str, path: str) -> None:
    """`**/name` allows a path if and only if its last segment is `name`."""
    for candidate in (path, f"{path}/{name}", name):
        assert allows(f"**/{name}", candidate) == (candidate.rsplit("/", 1)[-1] == name)


@given(st.text(alphabet="abZ7.-_", min_size=1, max_size=3), PATH)
def test_star_dot_ext_is_top_level_only(ext: str, path: str) -> None:
    """`*.ext` allows only files directly in the cwd; `**/*.ext` allows them at any depth."""
    ends = path.endswith(f".{ext}")
    assert allows(f"*.{ext}", path) == (ends and "/" not in path)
    assert allows(f"**/*.{ext}", path) == ends


@given(LITERAL_PATH, PATH)
def test_a_path_outside_base_is_always_outside(base: str, path: str) -> None:
    """With a base, only paths under it can be allowed, whatever the globs say."""
    for candidate in (path, f"{base}/{path}"):
        assert allows("**", candidate, base) == candidate.startswith(f"{base}/")


@given(LITERAL_PATH, PATH, PATH)
def test_globs_under_a_base_match_the_rest_of_the_path(base: str, glob_path: str, path: str) -> None:
    """Under a base, a glob judges `base/rest` exactly as it judges `rest` with no base."""
    glob = glob_path.replace("Z", "*")
    assert allows(glob, f"{base}/{path}", base) == allows(glob, path)


# --- lint -----------------------------------------------------------------------------------


@pytest.mark.parametrize("globs", [[], ["**"], ["src/**", "*.md", "docs/"], ["./src/*.py"],
                                   ["a/**/b", "?x"]])
def test_check_globs_accepts_usable_globs(globs: list[str]) -> None:
    """Relative globs, wildcards and trailing slashes pass lint."""
    assert check_globs(globs) is None


@pytest.mark.parametrize(("globs", "says"), [
    ([""], "empty glob"),
    (["src/**", "  "], "empty glob"),
    (["/etc/**"], "absolute path"),
    (["~/notes/*"], "absolute path"),
    (["C:\\work\\*"], "absolute path"),
    (["../other/**"], "'..'"),
    (["src/../../x"], "'..'"),
    ([" src/**"], "spaces"),
    ([3], "not a glob"),
])
def test_check_globs_names_the_first_problem(globs: list[object], says: str) -> None:
    """A malformed glob gets one line naming it and what is wrong."""
    problem = check_globs(globs)
    assert problem is not None
    assert says in problem
    assert "\n" not in problem


def test_check_globs_takes_a_bare_string_as_one_glob() -> None:
    """A bare string is checked as one glob, not character by character."""
    assert check_globs("src/**") is None
    assert check_globs("/abs") is not None
