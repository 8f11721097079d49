"""`aq doctor` with real git, real bare remotes, real fake tools on a PATH of our own, real files."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from aq.core.scrub import REDACTED
from aq.errors import ConfigError
from aq.infra.probe import probe
from aq.store.config import load_config
from aq.store.queue import Queue
from aq.usecases.doctor import Check, DoctorReport, doctor, to_json
from tests.helpers.cli import run_aq
from tests.helpers.git import git
from tests.helpers.queue import write_job

SHELL = frozenset({"os:linux", "engine:shell"})


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME of our own: no global git identity or config of the machine running the tests."""
    made = tmp_path / "home"
    made.mkdir()
    monkeypatch.setenv("HOME", str(made))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(made / ".config"))
    return made


def tools(folder: Path, *real: str, fakes: dict[str, str] | None = None) -> str:
    """A PATH of one folder holding links to the `real` tools and `fakes` (name -> sh script)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in real:
        found = shutil.which(name)
        assert found, name
        (folder / name).symlink_to(found)
    for name, script in (fakes or {}).items():
        path = folder / name
        path.write_text(f"#!/bin/sh\n{script}\n")
        path.chmod(0o755)
    return str(folder)


def check(report: DoctorReport, name: str) -> Check:
    found = [item for item in report.checks if item.name == name]
    assert len(found) == 1, [item.name for item in report.checks]
    return found[0]


def branch_of(root: Path) -> str:
    return git(root, "symbolic-ref", "--short", "HEAD").strip()


def with_remote(root: Path) -> Path:
    """A bare remote next to the queue, holding its branch, as `origin`."""
    bare = root.parent / "remote.git"
    git(root.parent, "init", "-q", "--bare", str(bare))
    git(root, "remote", "add", "origin", str(bare))
    git(root, "push", "-q", "origin", f"HEAD:refs/heads/{branch_of(root)}")
    return bare


def set_identity(root: Path) -> None:
    git(root, "config", "user.name", "Ann Example")
    git(root, "config", "user.email", "ann@example.com")


def hold(root: Path, job_id: str, *, holder: str, host: str, pid: int) -> str:
    """A job in building with a claim by `holder`, committed; its lease token."""
    token = f"{holder}:1"
    write_job(root, job_id, stage="building")
    events = [{"ts": "2026-01-01T12:00:00.000000Z", "type": "added", "by": "ann", "to": "inbox"},
              {"ts": "2026-01-01T12:01:00.000000Z", "type": "claimed", "by": holder, "from": "inbox",
               "to": "building", "token": token, "attempt": 1, "host": host, "pid": pid}]
    path = root / "queue" / ".events" / f"{job_id}.jsonl"
    path.write_text("".join(json.dumps(event) + "\n" for event in events))
    git(root, "add", "queue")
    git(root, "commit", "-q", "-m", f"claim {job_id}")
    return token


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


# --- the whole report ------------------------------------------------------------------------

def test_a_healthy_local_queue_passes_every_check(queue_root: Path) -> None:
    """A fresh local queue with git and its default engine present: every check but the
    missing other engines is ok, in a fixed order, and the report is ok."""
    report = doctor(Queue(queue_root), capabilities=SHELL)
    names = [item.name for item in report.checks]
    assert names[:5] == ["git", "identity", "queue", "remote", "halt"]
    assert names[-3:] == ["leases", "disk", "workspaces"]
    assert "engine:shell" in names and "engine:claude" in names
    assert all(item.status == "ok" for item in report.checks if not item.name.startswith("engine:"))
    assert check(report, "remote").detail == "local queue, no remote"
    assert check(report, "halt").detail == "not halted"
    assert check(report, "leases").detail == "no job in building"
    assert report.ok


def test_every_warning_and_failure_says_what_to_do(queue_root: Path, tmp_path: Path) -> None:
    """A check that is not ok carries a one-line fix; an ok check carries none."""
    (queue_root / "queue" / "HALT").write_text("maintenance\n")
    report = doctor(Queue(queue_root), capabilities=frozenset(), path=tools(tmp_path / "bin", "git"))
    assert any(item.status == "fail" for item in report.checks)
    for item in report.checks:
        assert "\n" not in item.detail
        if item.status == "ok":
            assert item.fix is None
        else:
            assert item.fix and "\n" not in item.fix


def test_capabilities_are_reported_in_describe_order(queue_root: Path) -> None:
    """The capabilities passed in come back in display order: os, arch, engines, tools, versions."""
    caps = frozenset({"git=2.39.5", "has:git", "engine:shell", "arch:x86_64", "os:linux"})
    report = doctor(Queue(queue_root), capabilities=caps)
    assert report.capabilities == ("os:linux", "arch:x86_64", "engine:shell", "has:git", "git=2.39.5")


def test_json_has_ok_checks_and_capabilities(queue_root: Path) -> None:
    """to_json gives {ok, checks: [{name, status, detail, fix}], capabilities}, JSON-serialisable."""
    (queue_root / "queue" / "HALT").write_text("maintenance\n")
    report = doctor(Queue(queue_root), capabilities=SHELL)
    document = json.loads(json.dumps(to_json(report)))
    assert set(document) == {"ok", "checks", "capabilities"}
    assert document["ok"] is report.ok is True  # a warning is not a failure
    assert document["capabilities"] == ["os:linux", "engine:shell"]
    halt = next(item for item in document["checks"] if item["name"] == "halt")
    assert halt == {"name": "halt", "status": "warn", "detail": "queue/HALT: maintenance; no worker "
                    "claims a job", "fix": "`aq resume` once the reason no longer holds"}


def test_without_a_queue_git_and_engines_are_still_checked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No queue found: one failing queue line saying `aq init` or --queue; git, identity and the
    built-in engines are still checked, and nothing that needs a queue is."""
    monkeypatch.chdir(tmp_path)
    report = doctor(None, capabilities=frozenset({"engine:shell"}), path=tools(tmp_path / "bin", "git"))
    queue = check(report, "queue")
    assert queue.status == "fail" and "aq init" in (queue.fix or "") and "--queue" in (queue.fix or "")
    assert check(report, "git").status == "ok"
    assert check(report, "identity").status == "ok"
    claude = check(report, "engine:claude")
    assert claude.status == "fail" and "built-in default engine" in claude.detail
    assert check(report, "engine:shell").status == "ok"
    assert {"remote", "halt", "leases", "disk"}.isdisjoint(item.name for item in report.checks)
    assert not report.ok


# --- git -------------------------------------------------------------------------------------

def test_git_reports_its_version_and_path(queue_root: Path, tmp_path: Path) -> None:
    """An installed git is ok, with its version and where it is."""
    path = tools(tmp_path / "bin", "git")
    found = check(doctor(Queue(queue_root), capabilities=SHELL, path=path), "git")
    assert found.status == "ok"
    assert found.detail.startswith("git 2.") and found.detail.endswith(f" at {tmp_path / 'bin' / 'git'}")


def test_git_missing_fails_and_the_checks_needing_it_are_not_run(queue_root: Path, tmp_path: Path) -> None:
    """No git on PATH: git fails with "install git"; identity, remote and leases say they were
    not checked; the queue itself is still read."""
    report = doctor(Queue(queue_root), capabilities=SHELL, path=tools(tmp_path / "empty"))
    missing = check(report, "git")
    assert missing.status == "fail" and "install git" in (missing.fix or "")
    for name in ("identity", "remote", "leases"):
        assert check(report, name).detail == "not checked: git is missing"
    assert check(report, "queue").status == "ok"
    assert not report.ok


def test_git_older_than_2_25_warns(queue_root: Path, tmp_path: Path) -> None:
    """A git that says it is 2.20.1 is a warning to upgrade, not a failure."""
    path = tools(tmp_path / "bin", fakes={"git": "echo 'git version 2.20.1'"})
    old = check(doctor(Queue(queue_root), capabilities=SHELL, path=path), "git")
    assert old.status == "warn"
    assert "2.20.1" in old.detail and "older than 2.25" in old.detail
    assert old.fix == "upgrade git to 2.25 or newer"


def test_a_git_that_gives_no_version_fails(queue_root: Path, tmp_path: Path) -> None:
    """A git that exits non-zero on --version is reported with what it said."""
    path = tools(tmp_path / "bin", fakes={"git": "echo 'fatal: broken install' >&2; exit 3"})
    broken = check(doctor(Queue(queue_root), capabilities=SHELL, path=path), "git")
    assert broken.status == "fail" and "fatal: broken install" in broken.detail


# --- identity --------------------------------------------------------------------------------

@pytest.fixture
def no_env_identity(queue_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No GIT_AUTHOR_*/GIT_COMMITTER_* in the environment (aq passes a CI's on to git), once
    the queue is made."""
    for name in ("NAME", "EMAIL"):
        monkeypatch.delenv(f"GIT_AUTHOR_{name}", raising=False)
        monkeypatch.delenv(f"GIT_COMMITTER_{name}", raising=False)


def test_an_identity_in_the_environment_is_the_one_named(
        queue_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_COMMITTER_NAME", "Casey CI")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "ci@example.com")
    found = check(doctor(Queue(queue_root), capabilities=SHELL), "identity")
    assert found == Check("identity", "ok", "commits are by Casey CI <ci@example.com>")


@pytest.mark.usefixtures("no_env_identity")
def test_no_identity_is_ok_because_aq_commits_as_its_fallback(queue_root: Path) -> None:
    """With no git user.email on a local queue, aq's own fallback identity is named and it is ok."""
    found = check(doctor(Queue(queue_root), capabilities=SHELL), "identity")
    host = socket.gethostname()
    assert found == Check("identity", "ok", f"no usable git identity: aq commits as aq <aq@{host}>")


@pytest.mark.usefixtures("no_env_identity")
def test_a_configured_identity_is_named(queue_root: Path) -> None:
    """The identity set for the queue repo is the one named."""
    set_identity(queue_root)
    found = check(doctor(Queue(queue_root), capabilities=SHELL), "identity")
    assert found == Check("identity", "ok", "commits are by Ann Example <ann@example.com>")


@pytest.mark.usefixtures("no_env_identity")
def test_an_email_without_a_usable_name_commits_as_the_fallback(queue_root: Path) -> None:
    """user.email set but user.name empty: git cannot name the committer, so aq commits (and
    publishes heartbeats) as its fallback identity, and the check says so."""
    git(queue_root, "config", "user.email", "ann@example.com")
    git(queue_root, "config", "user.name", "")
    found = check(doctor(Queue(queue_root), capabilities=SHELL), "identity")
    assert found == Check("identity", "ok", "no usable git identity: aq commits as "
                          f"aq <aq@{socket.gethostname()}>")


@pytest.mark.usefixtures("no_env_identity")
def test_with_no_identity_git_will_guess_heartbeats_still_land(queue_root: Path) -> None:
    """When git cannot name the committer (user.useConfigOnly, no user.email), the identity
    check is ok with aq's fallback, and a heartbeat committed with it reaches the remote."""
    from aq.store.sync import Remote

    with_remote(queue_root)
    git(queue_root, "config", "user.useConfigOnly", "true")
    queue = Queue(queue_root)
    found = check(doctor(queue, capabilities=SHELL), "identity")
    assert found.status == "ok" and "aq commits as aq <aq@" in found.detail
    remote = Remote.detect(queue_root, None)
    assert remote is not None
    assert not remote.heartbeat("w1", {"worker": "w1"})  # git alone cannot commit it
    assert remote.heartbeat("w1", {"worker": "w1"}, identity=queue.identity or ())


# --- the queue -------------------------------------------------------------------------------

def test_the_queue_line_counts_jobs_per_stage(queue_root: Path) -> None:
    """The queue check names the root and how many jobs each non-empty stage holds."""
    for job_id, stage in (("a", "inbox"), ("b", "inbox"), ("c", "shipped")):
        write_job(queue_root, job_id, stage=stage)
    found = check(doctor(Queue(queue_root), capabilities=SHELL), "queue")
    assert found == Check("queue", "ok", f"{queue_root}: 3 jobs (inbox 2, shipped 1)")


def test_queue_problems_fail_and_point_to_aq_lint(queue_root: Path) -> None:
    """Files that cannot be jobs and invalid manifests are counted, the first is shown, and the
    fix is `aq lint`."""
    (queue_root / "queue" / "inbox" / "Bad Name.md").write_text("echo hi\n")
    write_job(queue_root, "broken", priority="urgent")
    found = check(doctor(Queue(queue_root), capabilities=SHELL), "queue")
    assert found.status == "fail"
    assert "2 problems, the first: " in found.detail and "Bad Name.md" in found.detail
    assert "aq lint" in (found.fix or "")


def test_a_broken_aq_yaml_fails_with_its_message(queue_root: Path) -> None:
    """An aq.yaml that does not parse fails the queue check with the ConfigError's own words;
    the checks that need it say so, halt and disk still run."""
    config = queue_root / "aq.yaml"
    config.write_text(config.read_text().replace("timeout: 1h", "timeout: soon"))
    with pytest.raises(ConfigError) as raised:
        load_config(queue_root)
    report = doctor(Queue(queue_root), capabilities=SHELL)
    found = check(report, "queue")
    assert found.status == "fail" and found.detail == str(raised.value)
    assert "aq.yaml" in (found.fix or "")
    for name in ("remote", "engines", "leases"):
        assert check(report, name).detail == "not checked: aq.yaml is broken"
    assert check(report, "halt").status == "ok" and check(report, "disk").status == "ok"


def test_a_queue_outside_git_warns_to_run_aq_init(tmp_path: Path) -> None:
    """A queue folder that is no git work tree records no change: warn, and say `aq init ROOT`."""
    root = tmp_path / "plain"
    (root / "queue" / "inbox").mkdir(parents=True)
    found = check(doctor(Queue(root), capabilities=SHELL), "queue")
    assert found.status == "warn" and "not in a git repository" in found.detail
    assert found.fix == f"run `aq init {shlex.quote(str(root))}` to make it one"


def test_halt_warns_with_its_reason_and_aq_resume(queue_root: Path) -> None:
    """queue/HALT: a warning naming the reason, fixed by `aq resume`."""
    (queue_root / "queue" / "HALT").write_text("deploy freeze\nby ann at 2026-01-01\n")
    found = check(doctor(Queue(queue_root), capabilities=SHELL), "halt")
    assert found.status == "warn" and "deploy freeze" in found.detail
    assert "aq resume" in (found.fix or "")


def test_disk_reports_the_free_space_where_the_queue_lives(queue_root: Path) -> None:
    """The disk check gives the free GiB at the queue root (this machine has more than 1 GiB)."""
    found = check(doctor(Queue(queue_root), capabilities=SHELL), "disk")
    assert found.status == "ok" and found.detail.endswith(f" GiB free at {queue_root}")


# --- the remote ------------------------------------------------------------------------------

def test_a_reachable_remote_in_step_is_ok(tmp_path: Path) -> None:
    """A queue made by `aq init` with its bare remote in step: ok, naming the remote and its URL."""
    root = tmp_path / "q"
    assert run_aq("init", str(root), cwd=tmp_path).returncode == 0
    bare = with_remote(root)
    found = check(doctor(Queue(root), capabilities=SHELL), "remote")
    assert found == Check("remote", "ok", f"origin {bare}: reachable, {branch_of(root)} up to date")


def test_a_clone_behind_the_remote_warns(queue_root: Path, tmp_path: Path) -> None:
    """Another clone pushed: doctor fetches, says how far behind, and how to catch up."""
    bare = with_remote(queue_root)
    other = tmp_path / "other"
    git(tmp_path, "clone", "-q", str(bare), str(other))
    git(other, "commit", "-q", "--allow-empty", "-m", "elsewhere")
    git(other, "push", "-q", "origin", "HEAD")
    found = check(doctor(Queue(queue_root), capabilities=SHELL), "remote")
    assert found.status == "warn" and found.detail.endswith("this clone is 1 commit behind")
    assert f"git pull --ff-only origin {branch_of(queue_root)}" in (found.fix or "")


def test_a_clone_ahead_of_the_remote_says_how_to_keep_a_persons_commits(queue_root: Path) -> None:
    """A person's commit the remote lacks: warn that aq will not sync until it is pushed or set
    aside, and never advise a rebase; aq's own unpushed commits are left to the next aq run."""
    with_remote(queue_root)
    git(queue_root, "commit", "-q", "--allow-empty", "-m", "mine")
    found = check(doctor(Queue(queue_root), capabilities=SHELL), "remote")
    assert found.status == "warn" and "1 commit of a person's" in found.detail
    assert (found.fix or "").startswith(f"if they apply on origin/{branch_of(queue_root)}: git push")
    assert "rebase" not in (found.fix or "")
    git(queue_root, "reset", "-q", "--hard", "HEAD~1")
    git(queue_root, "commit", "-q", "--allow-empty", "-m", "aq: a result owed while away")
    found = check(doctor(Queue(queue_root), capabilities=SHELL), "remote")
    assert "of aq's that the remote lacks" in found.detail
    assert "never rebase" in (found.fix or "")


def test_a_remote_moved_away_fails_and_leases_are_not_judged(queue_root: Path) -> None:
    """The remote's folder renamed away: the remote fails as unreachable with a fix, and the
    building jobs' leases are not guessed at."""
    bare = with_remote(queue_root)
    hold(queue_root, "job-a", holder="w1", host="elsewhere", pid=1)
    bare.rename(bare.with_name("remote.away"))
    report = doctor(Queue(queue_root), capabilities=SHELL, timeout=5)
    found = check(report, "remote")
    assert found.status == "fail" and found.detail.startswith(f"origin {bare} is unreachable: ")
    assert "git remote set-url origin URL" in (found.fix or "")
    leases = check(report, "leases")
    assert leases.status == "warn" and "the remote did not answer" in leases.detail
    assert not report.ok


def test_credentials_in_a_remote_url_are_never_shown(queue_root: Path) -> None:
    """A password in the remote's URL does not reach the doctor's output."""
    git(queue_root, "remote", "add", "origin", "https://ann:s3cret-pass@127.0.0.1:9/q.git")
    report = doctor(Queue(queue_root), capabilities=SHELL, timeout=5)
    found = check(report, "remote")
    assert found.status == "fail" and REDACTED in found.detail
    assert "s3cret-pass" not in json.dumps(to_json(report))


def test_an_empty_remote_warns_to_push_the_branch(queue_root: Path) -> None:
    """A remote that holds no branch yet: reachable, and the fix is the push that gives it one."""
    bare = queue_root.parent / "empty.git"
    git(queue_root.parent, "init", "-q", "--bare", str(bare))
    git(queue_root, "remote", "add", "origin", str(bare))
    found = check(doctor(Queue(queue_root), capabilities=SHELL), "remote")
    assert found.status == "warn" and "has no branch" in found.detail
    assert found.fix == f"push it: git push origin HEAD:{branch_of(queue_root)}"


def test_a_remote_named_in_aq_yaml_but_missing_fails(queue_root: Path) -> None:
    """aq.yaml `remote: upstream` in a clone without that remote: fail, and say how to add it."""
    with (queue_root / "aq.yaml").open("a") as config:
        config.write("remote: upstream\n")
    found = check(doctor(Queue(queue_root), capabilities=SHELL), "remote")
    assert found.status == "fail" and "upstream" in found.detail
    assert "git remote add upstream URL" in (found.fix or "")


# --- engines ---------------------------------------------------------------------------------

def test_a_fake_engine_on_path_is_found_and_named_the_default(queue_root: Path, tmp_path: Path) -> None:
    """An engine of aq.yaml whose command is on PATH is ok with its path, marked the default."""
    config = queue_root / "aq.yaml"
    config.write_text(config.read_text().replace("default_engine: shell", "default_engine: my-agent")
                      + 'engines:\n  my-agent:\n    cmd: [my-agent, "--task={prompt}"]\n')
    path = tools(tmp_path / "bin", "git", fakes={"my-agent": "exit 0"})
    queue = Queue(queue_root)
    caps = probe(queue.config.engines, path=path, config_file=tmp_path / "no-worker.yaml")
    report = doctor(queue, capabilities=caps, path=path)
    agent = check(report, "engine:my-agent")
    assert agent == Check("engine:my-agent", "ok",
                          f"{tmp_path / 'bin' / 'my-agent'} (the queue's default engine); "
                          "no usage reader: runs record no cost")
    assert check(report, "engine:shell").status == "warn"  # no bash in that PATH
    assert report.ok


def test_an_installed_engine_shows_its_version_and_what_keeps_it_from_running_headless(
        queue_root: Path, tmp_path: Path) -> None:
    """An agent CLI on PATH is shown with the version it prints; claude run as root without
    IS_SANDBOX warns that yolo jobs would fail, and says how to fix it."""
    config = queue_root / "aq.yaml"
    config.write_text(config.read_text() + "engines:\n  gemini: {cmd: [gemini, --output-format, json]}\n")
    path = tools(tmp_path / "bin", "git", fakes={"claude": "echo '2.1.197 (Claude Code)'",
                                                 "gemini": "echo 0.61.0"})
    queue = Queue(queue_root)
    caps = probe(queue.config.engines, path=path, config_file=tmp_path / "no-worker.yaml")
    report = doctor(queue, capabilities=caps, path=path)
    claude, gemini = check(report, "engine:claude"), check(report, "engine:gemini")
    assert "(2.1.197 (Claude Code))" in claude.detail
    if os.geteuid() == 0 and not os.environ.get("IS_SANDBOX"):
        assert claude.status == "warn" and "IS_SANDBOX: 1" in (claude.fix or "")
    assert gemini.status == "warn" and "(0.61.0)" in gemini.detail
    assert "--skip-trust" in (gemini.fix or "")


def test_a_missing_default_engine_fails_and_other_missing_engines_warn(
        queue_root: Path, tmp_path: Path) -> None:
    """The default engine's command missing is a failure; another engine's is a warning; both
    name the command."""
    path = tools(tmp_path / "bin", "git")
    report = doctor(Queue(queue_root), capabilities=frozenset(), path=path)
    shell = check(report, "engine:shell")
    assert shell.status == "fail" and "'bash' is not on PATH" in shell.detail
    assert "queue's default engine" in shell.detail and "install bash" in (shell.fix or "")
    codex = check(report, "engine:codex")
    assert codex.status == "warn" and "'codex' is not on PATH" in codex.detail
    assert not report.ok


def test_a_default_engine_aq_does_not_know_fails(queue_root: Path) -> None:
    """default_engine naming no engine of aq.yaml or the built-ins fails, listing the known ones."""
    config = queue_root / "aq.yaml"
    config.write_text(config.read_text().replace("default_engine: shell", "default_engine: nope"))
    found = check(doctor(Queue(queue_root), capabilities=SHELL), "engine:nope")
    assert found.status == "fail" and "claude" in found.detail
    assert "engines.nope" in (found.fix or "")


# --- leases ----------------------------------------------------------------------------------

def test_a_live_local_holder_is_ok(queue_root: Path) -> None:
    """A building job held by a running process on this host (no remote) is not flagged."""
    hold(queue_root, "job-a", holder="w1", host=socket.gethostname(), pid=os.getpid())
    found = check(doctor(Queue(queue_root), capabilities=SHELL), "leases")
    assert found.status == "ok" and found.detail.startswith("1 building job,")


def test_a_dead_local_holder_and_a_job_without_a_claim_warn(queue_root: Path) -> None:
    """A holder on this host whose pid is gone, and a building job with no claim, are listed."""
    pid = dead_pid()
    hold(queue_root, "job-a", holder="w1", host=socket.gethostname(), pid=pid)
    write_job(queue_root, "job-b", stage="building")
    found = check(doctor(Queue(queue_root), capabilities=SHELL), "leases")
    assert found.status == "warn"
    assert f"job-a (worker w1 (pid {pid}) on this host is gone)" in found.detail
    assert "job-b (no claim event: it holds no lease)" in found.detail
    assert found.detail.startswith("2 of 2 building jobs not seen renewed")
    assert "aq workers" in (found.fix or "")


def test_leases_follow_the_heartbeats_seen_on_this_machines_clock(queue_root: Path) -> None:
    """A holder with no heartbeat is flagged; once its heartbeat appears it is ok; when the
    injected clock shows it unchanged for well past its next heartbeat, it is flagged again."""
    set_identity(queue_root)  # heartbeats are commits
    with_remote(queue_root)
    token = hold(queue_root, "job-a", holder="w1", host="elsewhere", pid=1)
    git(queue_root, "push", "-q", "origin", f"HEAD:refs/heads/{branch_of(queue_root)}")
    queue = Queue(queue_root)

    def leases(at: float) -> Check:
        return check(doctor(queue, capabilities=SHELL, monotonic=lambda: at), "leases")

    silent = leases(1000.0)
    assert silent.status == "warn" and "job-a (no heartbeat from w1 on the remote)" in silent.detail
    remote = queue.remote
    assert remote is not None and remote.heartbeat("w1", {"tokens": [token]})
    assert leases(1000.0).status == "ok"
    # lease_ttl 10m: a heartbeat every 5m; 7m30s is a renewal well overdue
    assert leases(1200.0).status == "ok"
    assert leases(1400.0).status == "ok"
    # looks at most half the TTL apart: an unbroken watch of the remote, so the silence counts
    assert leases(1500.0).status == "warn"
    late = leases(1000.0 + 600)
    assert late.status == "warn" and "job-a (w1 has not renewed it for 10m)" in late.detail
    assert "lease_ttl (10m)" in (late.fix or "")


def test_doctor_changes_nothing_in_the_clone(queue_root: Path, tmp_path: Path) -> None:
    """Even when it fetches a remote that moved on, doctor leaves HEAD and the work tree as they were."""
    bare = with_remote(queue_root)
    other = tmp_path / "other"
    git(tmp_path, "clone", "-q", str(bare), str(other))
    git(other, "commit", "-q", "--allow-empty", "-m", "elsewhere")
    git(other, "push", "-q", "origin", "HEAD")
    def state() -> tuple[str, str]:
        return (git(queue_root, "rev-parse", "HEAD"),
                git(queue_root, "status", "--porcelain", "--untracked-files=all"))

    before = state()
    doctor(Queue(queue_root), capabilities=SHELL)
    assert state() == before


# --- trackers ----------------------------------------------------------------------------------

def linked(root: Path, job_id: str, item: str) -> None:
    write_job(root, job_id, tracker_item=item)
    events = [{"ts": "2026-01-01T12:00:00.000000Z", "type": "added", "by": "ann", "to": "inbox"},
              {"ts": "2026-01-01T12:01:00.000000Z", "type": "claimed", "by": "w1", "from": "inbox",
               "to": "building", "token": "t1", "attempt": 1}]
    (root / "queue" / ".events" / f"{job_id}.jsonl").write_text(
        "".join(json.dumps(event) + "\n" for event in events))


def test_no_tracker_line_when_no_tracker_is_used(queue_root: Path) -> None:
    """A queue with no tracker set up and no linked job gets no trackers line at all."""
    assert "trackers" not in [item.name for item in doctor(Queue(queue_root), capabilities=SHELL).checks]


def test_trackers_warns_of_a_missing_token_backlog_and_owed_posts(
        queue_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Linked GitHub and Backlog.md jobs with no token, no gh, no backlog and a post owed: one
    warning line naming each, with the first fix; a token makes GitHub fine."""
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    (tmp_path / "plans").mkdir()
    with open(queue_root / "aq.yaml", "a") as config:
        config.write("trackers:\n  backlog:\n    path: ../plans\n")
    linked(queue_root, "gh-job", "github:acme/app#1")
    path = tools(tmp_path / "bin", "git")
    found = check(doctor(Queue(queue_root), capabilities=SHELL, path=path), "trackers")
    assert found.status == "warn"
    assert "no GitHub token" in found.detail and "backlog (Backlog.md) is not installed" in found.detail
    assert "1 tracker post(s) owed" in found.detail
    assert found.fix and "GITHUB_TOKEN" in found.fix
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_" + "x" * 36)
    tools(tmp_path / "bin", fakes={"backlog": "exit 0"})
    found = check(doctor(Queue(queue_root), capabilities=SHELL, path=path), "trackers")
    assert found.detail.startswith("1 tracker post(s) owed")
    assert "github token from GITHUB_TOKEN" in found.detail and "backlog project ../plans" in found.detail
    assert "ghp_" not in found.detail  # the token's name is shown, never its value
