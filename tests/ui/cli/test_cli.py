"""The command line as a person uses it: `python -m aq` as a real process, on a real queue in git."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from aq.errors import ExitStatus
from aq.usecases.setup import who_am_i
from tests.helpers.cli import Ran, aq_env, run_aq
from tests.helpers.git import git, head
from tests.helpers.queue import write_job

Aq = Callable[..., Ran]
STAGE_NAMES = ("inbox", "building", "review", "testing", "shipped", "failed", "dead_letter")
# The moves a person may make from each stage (DESIGN §3), written out here on purpose: the test
# must not borrow the table it checks.
ALLOWED = {
    "inbox": ("cancel",),
    "building": ("cancel",),
    "review": ("promote", "ship", "reject", "cancel"),
    "testing": ("ship", "reject", "cancel"),
    "shipped": (),
    "failed": ("requeue",),
    "dead_letter": ("requeue",),
}
TARGET = {"promote": "testing", "ship": "shipped", "reject": "failed", "requeue": "inbox",
          "cancel": "failed"}
SUFFIX = "[0-9abcdefghjkmnpqrstvwxyz]{6}"


def commits(root: Path) -> int:
    return int(git(root, "rev-list", "--count", "HEAD"))


def events_of(root: Path, job_id: str) -> list[dict[str, object]]:
    path = root / "queue" / ".events" / f"{job_id}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def frontmatter(path: Path) -> dict[str, object]:
    text = path.read_text()
    assert text.startswith("---\n"), text
    return yaml.safe_load(text.split("---\n")[1])


def inbox_files(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "queue" / "inbox").glob("*.md"))


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".git" not in p.relative_to(root).parts[:1]}


def assert_one_line_error(ran: Ran, status: ExitStatus) -> None:
    assert ran.returncode == status, (ran.returncode, ran.stderr)
    assert "Traceback" not in ran.stderr + ran.stdout
    assert ran.stderr.startswith("aq: ") and ran.stderr.count("\n") == 1, ran.stderr


# --- init ------------------------------------------------------------------------------------

def test_init_makes_stages_config_attributes_and_a_first_commit(tmp_path: Path) -> None:
    """`aq init DIR` on a plain folder makes every stage folder, aq.yaml, the union merge rule and a repo with one commit."""
    ran = run_aq("init", "q", cwd=tmp_path)
    root = tmp_path / "q"
    assert ran.returncode == 0, ran.stderr
    for stage in STAGE_NAMES:
        assert (root / "queue" / stage).is_dir(), stage
    assert (root / "aq.yaml").is_file()
    assert "queue/.events/*.jsonl merge=union" in (root / ".gitattributes").read_text().splitlines()
    assert git(root, "check-attr", "merge", "queue/.events/x.jsonl").strip().endswith("merge: union")
    assert commits(root) == 1
    assert git(root, "log", "-1", "--format=%s").strip() == "aq: init queue"
    assert git(root, "status", "--porcelain") == ""


def test_init_twice_changes_nothing(tmp_path: Path) -> None:
    """A second `aq init` on a queue makes no commit and leaves every file as it was."""
    run_aq("init", "q", cwd=tmp_path)
    root = tmp_path / "q"
    before, files = head(root), tree(root)
    ran = run_aq("init", "q", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert "nothing changed" in ran.stdout
    assert head(root) == before
    assert tree(root) == files


def test_init_in_an_existing_repo_keeps_its_history(tmp_path: Path) -> None:
    """Inside an existing repository `aq init` adds one commit on top of its history and does not re-init it."""
    git(tmp_path, "init", "-q")
    git(tmp_path, "config", "aq-test.marker", "kept")
    (tmp_path / "README").write_text("mine\n")
    git(tmp_path, "add", "README")
    git(tmp_path, "commit", "-qm", "mine")
    mine = head(tmp_path)
    refused = run_aq("init", ".", cwd=tmp_path)
    assert refused.returncode == 2 and "--here" in refused.stderr
    assert refused.stderr.count("\n") == 1 and head(tmp_path) == mine
    assert not (tmp_path / "aq.yaml").exists()
    ran = run_aq("init", ".", "--here", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert "new git repo" not in ran.stdout
    assert f"to the repository at {tmp_path.resolve()}" in ran.stdout
    assert git(tmp_path, "rev-parse", "HEAD~1").strip() == mine
    assert git(tmp_path, "config", "aq-test.marker").strip() == "kept"


def test_init_in_a_subfolder_of_a_repo_makes_no_nested_repo(tmp_path: Path) -> None:
    """`aq init sub` inside a repository commits to that repository and makes no `sub/.git`."""
    git(tmp_path, "init", "-q")
    refused = run_aq("init", "sub", cwd=tmp_path)
    assert refused.returncode == 2 and not (tmp_path / "sub").exists()  # nothing made
    ran = run_aq("init", "sub", "--here", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert not (tmp_path / "sub" / ".git").exists()
    assert "sub/aq.yaml" in git(tmp_path, "show", "--name-only", "--format=", "HEAD").split()


def test_init_commits_only_its_own_files(tmp_path: Path) -> None:
    """`aq init` in a repo with the user's staged work commits only the queue's files and leaves the work staged."""
    git(tmp_path, "init", "-q")
    (tmp_path / "README").write_text("mine\n")
    git(tmp_path, "add", "README")
    git(tmp_path, "commit", "-qm", "mine")
    (tmp_path / "notes.txt").write_text("half done\n")
    git(tmp_path, "add", "notes.txt")
    run_aq("init", ".", "--here", cwd=tmp_path)
    assert "notes.txt" not in git(tmp_path, "show", "--name-only", "--format=", "HEAD").split()
    assert git(tmp_path, "status", "--porcelain", "notes.txt").startswith("A ")


def test_add_commits_in_a_queue_inside_a_subfolder_of_a_repo(tmp_path: Path) -> None:
    """A queue made in a subfolder of a repository records each add as a commit of that repository."""
    git(tmp_path, "init", "-q")
    run_aq("init", "sub", "--here", cwd=tmp_path)
    ran = run_aq("add", "--body", "echo hi", cwd=tmp_path / "sub")
    assert ran.returncode == 0, ran.stderr
    assert git(tmp_path, "status", "--porcelain") == ""
    assert git(tmp_path, "log", "-1", "--format=%s").startswith(f"aq: add {ran.stdout.strip()}")


# --- add -------------------------------------------------------------------------------------

def test_add_from_a_file_keeps_its_frontmatter_and_body(aq: Aq, queue_root: Path, tmp_path: Path) -> None:
    """`aq add FILE` writes the file's frontmatter and body under a new id; an option wins over the file's key."""
    source = tmp_path / "job.md"
    source.write_text("---\npriority: low\nlock: db\n---\n# Fix the login\n\necho fixing\n")
    ran = aq("add", str(source), "--priority", "high")
    job_id = ran.stdout.strip()
    assert ran.returncode == 0, ran.stderr
    assert re.fullmatch(f"fix-the-login-{SUFFIX}", job_id), job_id
    written = queue_root / "queue" / "inbox" / f"{job_id}.md"
    assert frontmatter(written) == {"priority": "high", "lock": "db"}
    assert "echo fixing" in written.read_text()


def test_add_from_stdin(aq: Aq, queue_root: Path) -> None:
    """`aq add -` reads the job from stdin."""
    ran = aq("add", "-", "--title", "From stdin", input="echo from-stdin\n")
    assert ran.returncode == 0, ran.stderr
    text = (queue_root / "queue" / "inbox" / f"{ran.stdout.strip()}.md").read_text()
    assert "echo from-stdin" in text
    assert "title: From stdin" in text


def test_add_every_option_lands_in_the_manifest(aq: Aq, queue_root: Path) -> None:
    """Each `aq add` option is written as its manifest key, and the id is printed."""
    for dep in ("dep-a", "dep-b"):
        assert aq("add", "--body", "echo dep", "--id", dep).returncode == 0
    ran = aq("add", "--body", "echo all", "--title", "All options", "--id", "all-opts",
             "--priority", "high", "--deps", "dep-a, dep-b", "--verify", "test -f done",
             "--engine", "shell", "--profile", "reviewer", "--lock", "db", "--timeout", "45m",
             "--retry-max", "2", "--key", "key-1", "--cwd", "/tmp/work")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "all-opts\n"
    assert frontmatter(queue_root / "queue" / "inbox" / "all-opts.md") == {
        "title": "All options", "priority": "high", "deps": ["dep-a", "dep-b"],
        "verify": "test -f done", "engine": "shell", "profile": "reviewer", "lock": "db",
        "timeout": "45m", "idempotency-key": "key-1", "cwd": "/tmp/work", "retry": {"max": 2},
    }


def test_add_json_prints_the_job(aq: Aq) -> None:
    """`aq add --json` prints the new job with the values it was given."""
    ran = aq("add", "--body", "echo j", "--title", "Json job", "--priority", "critical",
             "--lock", "db", "--json")
    job = json.loads(ran.stdout)
    assert re.fullmatch(f"json-job-{SUFFIX}", job["id"])
    assert (job["stage"], job["title"], job["priority"], job["lock"], job["created"]) == (
        "inbox", "Json job", "critical", "db", True)


def test_add_ids_are_slug_plus_suffix_and_unique(aq: Aq) -> None:
    """Two adds with the same title get two different ids, each the title's slug plus a suffix."""
    first = aq("add", "--body", "echo 1", "--title", "Fix Login!").stdout.strip()
    second = aq("add", "--body", "echo 2", "--title", "Fix Login!").stdout.strip()
    assert re.fullmatch(f"fix-login-{SUFFIX}", first)
    assert re.fullmatch(f"fix-login-{SUFFIX}", second)
    assert first != second


def test_each_add_is_a_commit_of_the_manifest_and_its_event(aq: Aq, queue_root: Path) -> None:
    """An add commits the new manifest and its `added` event and leaves queue/ clean."""
    before = commits(queue_root)
    job_id = aq("add", "--body", "echo c").stdout.strip()
    assert commits(queue_root) == before + 1
    assert git(queue_root, "log", "-1", "--format=%s").startswith(f"aq: add {job_id} by ")
    changed = git(queue_root, "show", "--name-only", "--format=", "HEAD").split()
    assert sorted(changed) == [f"queue/.events/{job_id}.jsonl", f"queue/inbox/{job_id}.md"]
    assert git(queue_root, "status", "--porcelain", "queue") == ""
    assert [e["type"] for e in events_of(queue_root, job_id)] == ["added"]


def test_add_refuses_a_taken_id(aq: Aq, queue_root: Path) -> None:
    """`aq add --id X` when X exists in any stage is refused with exit 1 and writes nothing."""
    write_job(queue_root, "taken", stage="review")
    before = head(queue_root)
    ran = aq("add", "--body", "echo other", "--id", "taken")
    assert_one_line_error(ran, ExitStatus.REFUSED)
    assert "taken" in ran.stderr and "review" in ran.stderr
    assert inbox_files(queue_root) == []
    assert head(queue_root) == before


@pytest.mark.parametrize("bad_id", ["../x", "a/b"])
def test_add_refuses_a_path_as_id(aq: Aq, queue_root: Path, bad_id: str) -> None:
    """A job id that is a path is a usage error (exit 2) and nothing is written anywhere."""
    ran = aq("add", "--body", "echo x", "--id", bad_id)
    assert_one_line_error(ran, ExitStatus.USAGE)
    assert "path" in ran.stderr
    assert inbox_files(queue_root) == []
    assert not (queue_root / "x.md").exists() and not (queue_root / "queue" / "x.md").exists()


@pytest.mark.parametrize(("option", "key", "value"), [
    ("--priority", "priority", "urgent"),
    ("--timeout", "timeout", "soon"),
])
def test_add_bad_value_names_key_and_value(aq: Aq, queue_root: Path, option: str, key: str,
                                           value: str) -> None:
    """A bad --priority or --timeout is one line naming key and value, exit 2, and no file or commit."""
    before = head(queue_root)
    ran = aq("add", "--body", "echo x", option, value)
    assert_one_line_error(ran, ExitStatus.USAGE)
    assert ran.stderr.startswith(f"aq: {option}: '{value}'"), ran.stderr
    assert inbox_files(queue_root) == []
    assert head(queue_root) == before


def test_add_same_key_same_content_is_a_no_op(aq: Aq, queue_root: Path) -> None:
    """A second add with the same idempotency key and content prints the same id and adds nothing."""
    first = aq("add", "--body", "echo k", "--title", "Keyed", "--key", "k-1")
    before = head(queue_root)
    second = aq("add", "--body", "echo k", "--title", "Keyed", "--key", "k-1")
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout
    assert inbox_files(queue_root) == [f"{first.stdout.strip()}.md"]
    assert head(queue_root) == before


def test_add_same_key_other_content_is_refused(aq: Aq, queue_root: Path) -> None:
    """An add reusing an idempotency key with other content is refused (exit 1) and writes nothing."""
    first = aq("add", "--body", "echo k", "--key", "k-1").stdout.strip()
    before = head(queue_root)
    ran = aq("add", "--body", "echo different", "--key", "k-1")
    assert_one_line_error(ran, ExitStatus.REFUSED)
    assert first in ran.stderr
    assert inbox_files(queue_root) == [f"{first}.md"]
    assert head(queue_root) == before


def test_concurrent_adds_with_one_key_make_one_job(aq: Aq, queue_root: Path) -> None:
    """Four `aq add` processes at once with the same key and content make exactly one job."""
    with ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(lambda _: aq("add", "--body", "echo once", "--key", "same"), range(4)))
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    assert len({r.stdout for r in runs}) == 1
    assert inbox_files(queue_root) == [f"{runs[0].stdout.strip()}.md"]


# --- reading ---------------------------------------------------------------------------------

@pytest.fixture
def mixed(queue_root: Path) -> Path:
    """A queue with a ready job, a blocked one, and jobs in review and shipped."""
    write_job(queue_root, "base", stage="review", title="Base")
    write_job(queue_root, "ready-one", title="Ready one")
    write_job(queue_root, "waits", title="Waits", deps=["base"])
    write_job(queue_root, "old", stage="shipped", title="Old")
    return queue_root


def test_ls_groups_jobs_by_stage_with_why_inbox_jobs_wait(aq: Aq, mixed: Path) -> None:
    """`aq ls` prints each stage's jobs and, for inbox jobs, ready or the reason they wait."""
    out = aq("ls").stdout
    assert out.index("inbox:") < out.index("review:") < out.index("shipped:")
    assert re.search(r"ready-one .*\[ready\]", out)
    assert re.search(r"waits .*\[waits for dep base \(review\)\]", out)


def test_ls_filters_by_stage_ready_and_blocked(aq: Aq, mixed: Path) -> None:
    """--stage (repeatable), --ready and --blocked each keep only the jobs they name."""
    def ids(*args: str) -> list[str]:
        return sorted(job["id"] for job in json.loads(aq("ls", "--json", *args).stdout))

    assert ids() == ["base", "old", "ready-one", "waits"]
    assert ids("--stage", "review", "--stage", "shipped") == ["base", "old"]
    assert ids("-s", "review,shipped") == ["base", "old"]  # comma-separated, as a person types
    assert ids("-s", "review, shipped", "-s", "inbox") == ["base", "old", "ready-one", "waits"]
    assert ids("--ready") == ["ready-one"]
    assert ids("--blocked") == ["waits"]


def test_ls_refuses_an_unknown_stage(aq: Aq, mixed: Path) -> None:
    """`aq ls --stage nope` is a usage error naming the real stages."""
    ran = aq("ls", "--stage", "nope")
    assert_one_line_error(ran, ExitStatus.USAGE)
    assert "dead_letter" in ran.stderr
    listed = aq("ls", "-s", "inbox,nope")
    assert_one_line_error(listed, ExitStatus.USAGE)
    assert "'nope'" in listed.stderr


def test_a_timeout_with_no_unit_is_refused_asking_which_was_meant(aq: Aq, queue_root: Path) -> None:
    ran = aq("add", "--body", "echo x", "--timeout", "45")
    assert_one_line_error(ran, ExitStatus.USAGE)
    assert "--timeout 45 has no unit: did you mean 45m? (say 45s for seconds)" in ran.stderr
    assert inbox_files(queue_root) == []
    assert aq("add", "--body", "echo x", "--timeout", "45s").returncode == 0


def test_version_prints_the_installed_version(aq: Aq) -> None:
    from importlib.metadata import version

    ran = aq("--version")
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, f"aq {version('aq')}\n", "")


def test_show_prints_stage_block_reason_settings_and_timeline(aq: Aq, queue_root: Path) -> None:
    """`aq show` prints the stage, why the job waits, each resolved setting with its source, and the events."""
    aq("add", "--body", "echo s", "--title", "Shown", "--id", "shown", "--timeout", "45m",
       "--deps", "absent", "--force")
    out = aq("show", "shown").stdout
    assert "stage:    inbox" in out
    assert "dep absent does not exist" in out
    assert re.search(r"timeout:\s+45m\s+\(job\)", out)
    assert re.search(r"engine:\s+shell\s+\(queue default\)", out)
    assert re.search(r"added\s+->inbox by \S+@", out)


def test_show_json_has_manifest_settings_attempts_and_events(aq: Aq, queue_root: Path) -> None:
    """`aq show --json` holds the manifest, resolved settings with sources, attempts, events and block reason."""
    aq("add", "--body", "echo s", "--title", "Shown", "--id", "shown", "--timeout", "45m",
       "--deps", "absent", "--force")
    job = json.loads(aq("show", "shown", "--json").stdout)
    assert (job["stage"], job["body"], job["keys"]) == ("inbox", "echo s",
                                                         ["title", "deps", "timeout"])
    assert job["resolved"]["timeout"] == {"value": 2700.0, "source": "job"}
    assert job["resolved"]["engine"] == {"value": "shell", "source": "queue default"}
    assert job["blocked"] == {"kind": "dep", "reason": "dep absent does not exist"}
    assert (job["attempts"], job["attempt_log"]) == (0, [])
    assert [e["type"] for e in job["events"]] == ["added"]
    assert job["allowed_moves"] == ["cancel"]


def test_show_timeline_lists_each_move_in_order(aq: Aq, queue_root: Path) -> None:
    """After promote and ship, `aq show` lists added, then both moves, oldest first."""
    write_job(queue_root, "moving", stage="review")
    aq("promote", "moving")
    aq("ship", "moving")
    out = aq("show", "moving").stdout
    assert out.index("review->testing") < out.index("testing->shipped")
    assert "moves:    none" in out


def test_next_explain_names_every_reason_a_job_is_passed_over(aq: Aq, queue_root: Path) -> None:
    """`aq next --explain` takes the ready job and names why each other inbox job was passed over."""
    write_job(queue_root, "take-me", title="Take me")
    write_job(queue_root, "unfinished", stage="review")
    write_job(queue_root, "on-dep", deps=["unfinished"])
    write_job(queue_root, "on-missing", deps=["ghost"])
    write_job(queue_root, "holder", stage="building", lock="db")
    write_job(queue_root, "on-lock", lock="db")
    write_job(queue_root, "later")
    (queue_root / "queue" / ".events" / "later.jsonl").write_text(json.dumps(
        {"ts": "2026-01-01T00:00:00.000000Z", "type": "finished", "by": "w", "action": "retry",
         "outcome": "engine_failed", "not_before": "2999-01-01T00:00:00.000000Z"}) + "\n")
    write_job(queue_root, "broken", timeout="forever")
    write_job(queue_root, "cyc-a", deps=["cyc-b"])
    write_job(queue_root, "cyc-b", deps=["cyc-a"])
    out = aq("next", "--explain").stdout
    assert out.splitlines()[0].startswith("take-me")
    expected = {
        "take-me": "first in order",
        "on-dep": "waits for dep unfinished (review)",
        "on-missing": "dep ghost does not exist",
        "on-lock": "lock 'db' is held by holder",
        "later": "retry not before 2999-01-01",
        "broken": "invalid manifest",
        "cyc-a": "dependency cycle",
        "cyc-b": "dependency cycle",
    }
    for job_id, reason in expected.items():
        assert re.search(rf"^  \w+ +{re.escape(job_id)}: .*{re.escape(reason)}", out, re.M), (job_id, out)


def test_next_explain_on_a_halted_queue_names_the_halt(aq: Aq, queue_root: Path) -> None:
    """On a halted queue `aq next` takes nothing and --explain gives the halt reason for a ready job."""
    write_job(queue_root, "free")
    (queue_root / "queue" / "HALT").write_text("deploy freeze\n")
    out = aq("next", "--explain").stdout
    assert out.startswith("nothing to take")
    assert "free: queue halted: deploy freeze" in out


def test_next_says_the_queue_is_halted(aq: Aq, queue_root: Path) -> None:
    """Plain `aq next` on a halted queue says that it is halted, not only that there is nothing to take."""
    write_job(queue_root, "free")
    (queue_root / "queue" / "HALT").write_text("deploy freeze\n")
    assert "halted" in aq("next").stdout


# --- lint ------------------------------------------------------------------------------------

def test_lint_passes_a_good_queue(aq: Aq, queue_root: Path) -> None:
    """`aq lint` exits 0 on a queue whose manifests, deps and event logs are all sound."""
    write_job(queue_root, "first", stage="testing", priority="high")
    write_job(queue_root, "second", deps=["first"], timeout="45m", retry={"max": 2})
    aq("add", "--body", "echo third", "--deps", "second")
    ran = aq("lint")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout == ""


def test_lint_lists_every_problem(aq: Aq, queue_root: Path) -> None:
    """`aq lint` on a queue with many kinds of bad file exits 1 and lists each one."""
    inbox = queue_root / "queue" / "inbox"
    (inbox / "bad-yaml.md").write_text("---\npriority: [high\n---\necho\n")
    write_job(queue_root, "typo", prioirty="high")
    write_job(queue_root, "slow", timeout="forever")
    write_job(queue_root, "selfish", deps=["selfish"])
    write_job(queue_root, "lonely", deps=["nowhere"])
    write_job(queue_root, "cyc-a", deps=["cyc-b"])
    write_job(queue_root, "cyc-b", deps=["cyc-a"])
    (inbox / "Bad Name.md").write_text("echo\n")
    write_job(queue_root, "torn")
    (queue_root / "queue" / ".events" / "torn.jsonl").write_text(
        '{"ts":"2026-01-01T00:00:00Z","type":"added","by":"x","to":"inbox"}\n{"ts":"2026-01-0')
    ran = aq("lint")
    assert ran.returncode == ExitStatus.REFUSED
    lines = ran.stdout.splitlines()
    expected = [
        r"bad-yaml\.md: frontmatter is not valid YAML",
        r"typo\.md: key 'prioirty': .*did you mean 'priority'",
        r"slow\.md: key 'timeout': 'forever'",
        r"selfish\.md: key 'deps': the job depends on itself",
        r"lonely\.md: key 'deps': job 'nowhere' does not exist",
        r"dependency cycle: cyc-a -> cyc-b -> cyc-a",
        r"Bad Name\.md: the file name is not a job id",
        r"torn\.jsonl: line 2 is not a JSON event",
    ]
    for pattern in expected:
        assert sum(bool(re.search(pattern, line)) for line in lines) == 1, (pattern, lines)
    assert len(lines) == len(expected)
    assert "8 problem(s)" in ran.stderr


def test_lint_reports_a_job_in_two_stages(aq: Aq, queue_root: Path) -> None:
    """A job file present in two stage folders is a lint problem naming both stages."""
    write_job(queue_root, "twin")
    write_job(queue_root, "twin", stage="review")
    ran = aq("lint")
    assert ran.returncode == ExitStatus.REFUSED
    assert re.search(r"twin\.md: job twin is also in (inbox|review)", ran.stdout), ran.stdout


def test_an_event_with_a_bad_timestamp_is_reported_not_fatal(aq: Aq, queue_root: Path) -> None:
    """An event line whose `ts` is not a time is a lint problem, and `aq ls` still lists the other jobs."""
    write_job(queue_root, "fine")
    write_job(queue_root, "odd")
    (queue_root / "queue" / ".events" / "odd.jsonl").write_text(
        '{"ts":"yesterday","type":"added","by":"x","to":"inbox"}\n')
    listed = aq("ls", "--json")
    assert listed.returncode == 0, listed.stderr
    assert "fine" in [job["id"] for job in json.loads(listed.stdout)]
    linted = aq("lint")
    assert linted.returncode == ExitStatus.REFUSED and "odd" in linted.stdout


# --- prefixes --------------------------------------------------------------------------------

def test_a_unique_prefix_names_the_job(aq: Aq, queue_root: Path) -> None:
    """show and ship accept any unique prefix of a job id."""
    write_job(queue_root, "fix-login-abc123", stage="review")
    write_job(queue_root, "add-docs-def456")
    assert json.loads(aq("show", "fix", "--json").stdout)["id"] == "fix-login-abc123"
    ran = aq("ship", "fix-l")
    assert ran.stdout == "fix-login-abc123: review -> shipped\n"


def test_an_ambiguous_prefix_is_refused_naming_the_matches(aq: Aq, queue_root: Path) -> None:
    """A prefix matching two jobs is refused (exit 1), naming both, and moves nothing."""
    write_job(queue_root, "fix-login", stage="review")
    write_job(queue_root, "fix-logout", stage="review")
    ran = aq("ship", "fix")
    assert_one_line_error(ran, ExitStatus.REFUSED)
    assert "fix-login" in ran.stderr and "fix-logout" in ran.stderr
    assert sorted(p.name for p in (queue_root / "queue" / "review").glob("*.md")) == [
        "fix-login.md", "fix-logout.md"]


def test_an_empty_job_reference_is_refused(aq: Aq, queue_root: Path) -> None:
    """`aq cancel ""` (a script's unset variable) is a usage error, never a move of the only job."""
    write_job(queue_root, "only")
    ran = aq("cancel", "")
    assert ran.returncode == ExitStatus.USAGE
    assert (queue_root / "queue" / "inbox" / "only.md").exists()


# --- human moves -----------------------------------------------------------------------------

# One source stage per move through the CLI; every (stage, move) pair is checked in test_app.py.
CLI_MOVES = [("review", "promote"), ("testing", "ship"), ("testing", "reject"),
             ("dead_letter", "requeue"), ("building", "cancel")]
# Through the CLI: every stage and every move once; test_app.py checks all 24 forbidden pairs.
FORBIDDEN_MOVES = [("inbox", "ship"), ("building", "promote"), ("review", "requeue"),
                   ("testing", "promote"), ("shipped", "cancel"), ("failed", "reject"),
                   ("dead_letter", "ship")]


def move_args(action: str, job_id: str) -> list[str]:
    return [action, job_id, *(["--reason", "not good enough"] if action == "reject" else [])]


@pytest.mark.parametrize(("stage", "action"), CLI_MOVES)
def test_an_allowed_move_moves_records_and_commits(aq: Aq, queue_root: Path, stage: str,
                                                   action: str) -> None:
    """A move the lifecycle allows moves the file, appends a who/when/from/to/why event and commits."""
    write_job(queue_root, "mover", stage=stage)
    before = commits(queue_root)
    ran = aq(*move_args(action, "mover"))
    target = TARGET[action]
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == f"mover: {stage} -> {target}\n"
    assert (queue_root / "queue" / target / "mover.md").exists()
    assert not (queue_root / "queue" / stage / "mover.md").exists()
    event = events_of(queue_root, "mover")[-1]
    why = {"reject": "not good enough", "cancel": "canceled"}.get(action, f"{action} by {who_am_i()}")
    assert {k: event[k] for k in ("type", "by", "from", "to", "action", "why")} == {
        "type": "moved", "by": who_am_i(), "from": stage, "to": target, "action": action,
        "why": why}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", str(event["ts"]))
    assert commits(queue_root) == before + 1
    assert git(queue_root, "log", "-1", "--format=%s").startswith(f"aq: {action} mover by ")
    assert git(queue_root, "status", "--porcelain", "queue") == ""


@pytest.mark.parametrize("reason", ["", "   "])
def test_a_reject_without_a_reason_is_refused_as_everywhere_else(aq: Aq, queue_root: Path,
                                                                  reason: str) -> None:
    """`aq reject J -r ''` once moved the job, where the dash, the web UI and MCP ask why."""
    write_job(queue_root, "mover", stage="testing")
    ran = aq("reject", "mover", "--reason", reason)
    assert_one_line_error(ran, ExitStatus.USAGE)
    assert "a reject needs a reason" in ran.stderr
    assert (queue_root / "queue" / "testing" / "mover.md").exists()


def test_cancel_reason_is_kept_in_the_event(aq: Aq, queue_root: Path) -> None:
    """`aq cancel --reason R` records why as 'canceled: R'."""
    write_job(queue_root, "mover", stage="testing")
    aq("cancel", "mover", "--reason", "duplicate")
    assert events_of(queue_root, "mover")[-1]["why"] == "canceled: duplicate"


def test_forbidden_moves_are_refused_naming_stage_and_allowed_moves(aq: Aq, queue_root: Path) -> None:
    """A move the lifecycle forbids, from any stage, exits 1 with one line naming the stage and its allowed moves, and changes nothing."""
    for stage in STAGE_NAMES:
        write_job(queue_root, f"in-{stage}", stage=stage)
    git(queue_root, "add", "queue")
    git(queue_root, "commit", "-qm", "jobs")
    before = head(queue_root)
    with ThreadPoolExecutor(3) as pool:
        runs = list(pool.map(lambda m: aq(*move_args(m[1], f"in-{m[0]}")), FORBIDDEN_MOVES))
    for (stage, action), ran in zip(FORBIDDEN_MOVES, runs, strict=True):
        assert_one_line_error(ran, ExitStatus.REFUSED)
        assert f"cannot {action} in-{stage}: it is in {stage}" in ran.stderr
        may = ran.stderr.split("may:", 1)[1]
        assert sorted(re.findall(r"[a-z]+", may)) == sorted(ALLOWED[stage]) or (
            not ALLOWED[stage] and "none" in may), (stage, action, ran.stderr)
    for stage in STAGE_NAMES:
        assert (queue_root / "queue" / stage / f"in-{stage}.md").exists()
        assert events_of(queue_root, f"in-{stage}") == []
    assert head(queue_root) == before


def test_requeue_keeps_the_earlier_events(aq: Aq, queue_root: Path) -> None:
    """A job rejected and then requeued is back in the inbox with its whole history kept."""
    write_job(queue_root, "again", stage="review")
    aq("reject", "again", "--reason", "wrong")
    aq("requeue", "again")
    moves = [(e["from"], e["to"]) for e in events_of(queue_root, "again")]
    assert moves == [("review", "failed"), ("failed", "inbox")]
    assert (queue_root / "queue" / "inbox" / "again.md").exists()


# --- halt / resume ---------------------------------------------------------------------------

def test_halt_and_resume_create_and_remove_the_halt_file(aq: Aq, queue_root: Path) -> None:
    """halt creates queue/HALT with the reason in a commit; resume removes it in another."""
    halt_file = queue_root / "queue" / "HALT"
    assert aq("halt", "--reason", "deploy freeze").returncode == 0
    assert halt_file.read_text().startswith("deploy freeze\n")
    assert git(queue_root, "log", "-1", "--format=%s").startswith("aq: halt by ")
    assert aq("resume").returncode == 0
    assert not halt_file.exists()
    assert git(queue_root, "log", "-1", "--format=%s").startswith("aq: resume by ")
    assert git(queue_root, "status", "--porcelain", "queue") == ""


def test_run_drain_claims_nothing_while_halted(aq: Aq, queue_root: Path) -> None:
    """`aq run --drain` on a halted queue ends at once and leaves the ready job in the inbox, unclaimed."""
    write_job(queue_root, "work", body="echo working")
    aq("halt")
    ran = aq("run", "--drain", timeout=30)
    assert ran.returncode == 0, ran.stderr
    assert "0 claimed" in ran.stderr
    assert (queue_root / "queue" / "inbox" / "work.md").exists()
    assert events_of(queue_root, "work") == []


# --- exit codes and errors -------------------------------------------------------------------

EXIT_CASES = {
    ExitStatus.OK: ["ls"],
    ExitStatus.REFUSED: ["show", "no-such-job"],
    ExitStatus.USAGE: ["add", "--body", "echo", "--id", "Not An Id"],
}


@pytest.mark.parametrize("status", list(ExitStatus))
def test_each_exit_status_is_what_the_command_returns(aq: Aq, status: ExitStatus) -> None:
    """Every ExitStatus value is the exit code of a command that ends that way."""
    ran = aq(*EXIT_CASES[status])
    assert ran.returncode == status.value, ran.stderr
    if status is not ExitStatus.OK:
        assert_one_line_error(ran, status)


def test_outside_any_queue_is_one_line(tmp_path: Path) -> None:
    """A command run outside any queue says there is no queue, in one line, exit 1."""
    ran = run_aq("ls", cwd=tmp_path)
    assert_one_line_error(ran, ExitStatus.REFUSED)
    assert "no aq queue" in ran.stderr


def test_a_missing_queue_dir_is_one_line(aq: Aq, tmp_path: Path) -> None:
    """--queue naming a folder that is not a queue is one line, exit 1."""
    ran = aq("ls", "--queue", str(tmp_path / "nowhere"))
    assert_one_line_error(ran, ExitStatus.REFUSED)
    assert "is not an aq queue" in ran.stderr


@pytest.mark.parametrize("args", [["ls"], ["show", "job"], ["run", "--once"]])
@pytest.mark.parametrize(("text", "said"), [
    (b"timeout: [1h\n", "aq.yaml: not valid YAML"),
    (b"timeout: 1h # \xe9t\xe9\n", "aq.yaml: not UTF-8 text (byte 0xe9 at offset 14): save it as UTF-8"),
])
def test_a_broken_config_is_one_line(aq: Aq, queue_root: Path, args: list[str], text: bytes,
                                     said: str) -> None:
    """A broken aq.yaml stops ls, show and run with one line naming the file, exit 1."""
    write_job(queue_root, "job")
    (queue_root / "aq.yaml").write_bytes(text)
    ran = aq(*args)
    assert_one_line_error(ran, ExitStatus.REFUSED)
    assert said in ran.stderr
    assert (queue_root / "queue" / "inbox" / "job.md").exists()


def test_a_config_key_typo_gets_a_did_you_mean(aq: Aq, queue_root: Path) -> None:
    """An unknown aq.yaml key is one line naming it with the nearest known key."""
    (queue_root / "aq.yaml").write_text("timout: 1h\n")
    ran = aq("next")
    assert_one_line_error(ran, ExitStatus.REFUSED)
    assert "'timout' (did you mean 'timeout'?)" in ran.stderr


@pytest.mark.parametrize("args", [
    ["show", "../etc/passwd"],
    ["add"],
    ["add", "--body", "echo", "--title", "bad\ntitle"],
    ["add", "/no/such/file.md"],
])
def test_usage_mistakes_are_one_line_exit_2(aq: Aq, args: list[str]) -> None:
    """Usage mistakes that aq itself checks give exit 2 and one line on stderr."""
    assert_one_line_error(aq(*args), ExitStatus.USAGE)


@pytest.mark.parametrize("args", [["ls", "--bogus"], ["reject", "job"]])
def test_parser_errors_are_one_line_exit_2(aq: Aq, args: list[str]) -> None:
    """An unknown option or a missing required option is one line on stderr, exit 2."""
    assert_one_line_error(aq(*args), ExitStatus.USAGE)


def test_next_checks_version_requirements_against_the_tools_on_path(
        aq: Aq, queue_root: Path, tmp_path: Path) -> None:
    """`aq next` probes the versions a job's requirements compare: `node>=20` is met by a node
    that says v20.11.1 and not by one that says v18.19.0, and --explain names what is missing."""
    tools = tmp_path / "bin"
    tools.mkdir()
    node = tools / "node"
    write_job(queue_root, "needs-node", capabilities=["node>=20,<23"])
    for version, taken in (("v20.11.1", True), ("v18.19.0", False)):
        node.write_text(f"#!/bin/sh\necho {version}\n")
        node.chmod(0o755)
        path = f"{tools}:{os.environ['PATH']}"
        out = aq("next", "--explain", env={"PATH": path}).stdout
        assert out.startswith("needs-node") is taken, out
        if not taken:
            assert "needs-node: needs capability node>=20,<23 that this worker lacks" in out


def test_board_once_prints_every_stage_without_escape_codes(aq: Aq, queue_root: Path) -> None:
    """`aq board --once` to a pipe prints one plain snapshot with each stage and its count."""
    write_job(queue_root, "waiting", title="A job in the inbox")
    write_job(queue_root, "done", stage="shipped", title="A shipped job")
    ran = aq("board", "--once", env={"COLUMNS": "100"})
    assert ran.returncode == 0, ran.stderr
    assert "\x1b" not in ran.stdout
    for stage in STAGE_NAMES:
        assert stage in ran.stdout
    assert "inbox (1)" in ran.stdout and "shipped (1)" in ran.stdout
    assert all(len(line) <= 100 for line in ran.stdout.splitlines())


def test_stats_and_events_read_what_a_run_did(aq: Aq, queue_root: Path) -> None:
    """After a real run, `aq stats --json` counts its attempts and `aq events --json` lists its
    events in time order, one JSON object per line."""
    write_job(queue_root, "ok-job", "true", engine="shell", verify="true")
    write_job(queue_root, "bad-job", "true", engine="shell", verify="false")
    assert aq("run", "--drain").returncode == 0
    figures = json.loads(aq("stats", "--json").stdout)
    assert figures["attempts"] == 2 and figures["verify_pass_rate"] == 0.5, figures
    lines = [json.loads(line) for line in aq("events", "--json").stdout.splitlines()]
    assert [e["type"] for e in lines if e["job"] == "ok-job"] == ["claimed", "finished"]
    assert [e["ts"] for e in lines] == sorted(e["ts"] for e in lines)
    assert aq("stats", "--since", "soon").returncode == 2


def test_events_follow_prints_an_event_as_it_happens(aq: Aq, queue_root: Path) -> None:
    """`aq events --follow` keeps running and prints an event added after it started."""
    follower = subprocess.Popen([sys.executable, "-m", "aq", "events", "--follow", "--every", "0.2"],
                                cwd=queue_root, env=aq_env(), stdout=subprocess.PIPE, text=True)
    import queue as queue_module
    import threading

    lines: queue_module.Queue[str] = queue_module.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in follower.stdout or ()],
                     daemon=True).start()
    try:
        assert aq("add", "--title", "Late", "--engine", "shell", "--body", "true").returncode == 0
        line = lines.get(timeout=30)  # raises Empty if nothing came
        assert " added " in line and "late" in line, line
    finally:
        follower.kill()
        follower.wait(timeout=10)
