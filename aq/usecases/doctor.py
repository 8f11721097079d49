"""`aq doctor`: is this machine ready to work this queue, and if not, what to do about it.

Each check is one line: what was found and, for a warning or a failure, the one thing to do.
The caller probes the capabilities (see `aq.infra.probe.probe`); this module only looks. It
writes nothing a worker on this machine would not write too: the remote's refs it fetches, and
this machine's record of the heartbeats it saw (so that silence is measured as `aq run` does).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aq.core.durations import format_duration
from aq.core.leases import heartbeat_every, watch_gap
from aq.core.lifecycle import STAGES, Stage
from aq.core.requirements import compare_versions, parse_version, version_in
from aq.core.scrub import REDACTED, Scrubber
from aq.errors import AqError
from aq.infra import gitops, proc
from aq.infra.engines import EngineSpec, engine_version, headless_problems
from aq.infra.probe import describe
from aq.infra.repocache import caches_dir
from aq.store.config import QueueConfig
from aq.store.queue import Queue
from aq.store.snapshot import Job, Snapshot
from aq.store.sync import LeaseObserver
from aq.trackers.settings import TrackerSettings
from aq.usecases.tracker_posts import owed_posts

if TYPE_CHECKING:
    from aq.store.sync import Remote

OK, WARN, FAIL = "ok", "warn", "fail"
MIN_GIT = (2, 25)
LOW_DISK = 1 << 30  # bytes: below this, attempt logs, artifacts and git objects may not fit
NO_GIT = ("git is missing", "install git, then run `aq doctor` again")
BROKEN_CONFIG = ("aq.yaml is broken", "fix aq.yaml, then run `aq doctor` again")


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: str  # "ok" | "warn" | "fail"
    detail: str  # one line: what was found
    fix: str | None = None  # one line: what to do, for warn and fail


@dataclass(frozen=True, slots=True)
class DoctorReport:
    checks: tuple[Check, ...]
    capabilities: tuple[str, ...]  # in `aq.infra.probe.describe` order

    @property
    def ok(self) -> bool:
        return all(check.status != FAIL for check in self.checks)


def doctor(
    queue: Queue | None,
    *,
    capabilities: frozenset[str],
    path: str | None = None,
    timeout: float = 10.0,
    monotonic: Callable[[], float] = time.monotonic,
) -> DoctorReport:
    """Check git, the git identity, the queue, its remote, HALT, the engines, the leases and the disk.

    `queue` None: no queue was found; the checks that need one are a single failing line.
    `path` is the PATH searched for git and the engines (default: ours); `timeout` bounds each
    question to git or the remote; `monotonic` is this machine's clock for heartbeat silence.
    """
    search = os.environ.get("PATH", os.defpath) if path is None else path
    git_check = _check_git(search, timeout)
    has_git = git_check.status != FAIL
    heartbeats = has_git and queue is not None and _has_remote(queue)
    checks = [git_check, _check_identity(queue.root if queue else Path.cwd(), has_git, heartbeats)]
    if queue is None:
        checks.append(Check("queue", FAIL, f"no aq queue found from {Path.cwd()}",
                            "run `aq init` to make one here, or pass --queue DIR"))
        checks += _check_engines(QueueConfig(), capabilities, search, "the built-in default")
    else:
        checks += _queue_checks(queue, capabilities, search, has_git, timeout, monotonic)
    return DoctorReport(tuple(checks), tuple(describe(capabilities)))


def to_json(report: DoctorReport) -> dict[str, Any]:
    """The `aq doctor --json` document."""
    return {
        "ok": report.ok,
        "checks": [{"name": check.name, "status": check.status, "detail": check.detail,
                    "fix": check.fix} for check in report.checks],
        "capabilities": list(report.capabilities),
    }


def _queue_checks(queue: Queue, capabilities: frozenset[str], search: str, has_git: bool,
                  timeout: float, monotonic: Callable[[], float]) -> list[Check]:
    try:
        config: QueueConfig | None = queue.config
        broken = None
    except AqError as err:
        config, broken = None, str(err)
    snapshot = queue.snapshot()
    checks = [_check_queue(queue, snapshot, broken)]
    if config is None:
        return [*checks, _not_checked("remote", BROKEN_CONFIG), _check_halt(queue),
                _not_checked("engines", BROKEN_CONFIG), _not_checked("leases", BROKEN_CONFIG),
                _check_disk(queue.root)]
    remote: Remote | None = None
    fetched = False
    if has_git:
        remote_check, remote, fetched = _check_remote(queue, config, timeout)
        checks.append(remote_check)
    else:
        checks.append(_not_checked("remote", NO_GIT))
    checks.append(_check_halt(queue))
    checks += _check_engines(config, capabilities, search, "the queue's default")
    checks.append(_check_leases(queue, config, snapshot, remote, fetched, monotonic(), timeout)
                  if has_git else _not_checked("leases", NO_GIT))
    checks.append(_check_disk(queue.root))
    checks.append(_check_workspaces(config.workspaces_root(queue.workspace_key)))
    tracker_check = _check_trackers(queue, config, snapshot, search)
    if tracker_check is not None:
        checks.append(tracker_check)
    return checks


def _check_trackers(queue: Queue, config: QueueConfig, snapshot: Snapshot, search: str
                    ) -> Check | None:
    """What the tracker bridge needs here (a token, Backlog.md, a command tracker's program;
    nothing is asked of a tracker over the network), and the posts still owed. None when no
    tracker is set up and no job links to one."""
    settings = config.trackers
    linked = [job for job in snapshot.jobs if job.manifest and job.manifest.tracker_item]
    kinds = {str(job.manifest.tracker_item).partition(":")[0] for job in linked if job.manifest}
    if settings.backlog.path:
        kinds.add("backlog")
    if settings.github != TrackerSettings().github:
        kinds.add("github")
    if not kinds and not settings.commands:
        return None
    problems, fine = [], []
    if "github" in kinds:
        if os.environ.get(settings.github.token_env):
            fine.append(f"github token from {settings.github.token_env}")
        elif shutil.which("gh", path=search):
            fine.append("github token from gh (if logged in)")
        else:
            problems.append((f"no GitHub token: {settings.github.token_env} is unset and gh is "
                             "not installed", f"export {settings.github.token_env}=... (a token "
                             "that may read and write issues)"))
    if "backlog" in kinds:
        project = queue.root / (settings.backlog.path or "")
        if not settings.backlog.path or not project.is_dir():
            problems.append((f"Backlog.md project {settings.backlog.path or '(unset)'} not found",
                             "set trackers.backlog.path in aq.yaml to the project's folder"))
        elif not shutil.which(settings.backlog.command[0], path=search):
            problems.append((f"{settings.backlog.command[0]} (Backlog.md) is not installed",
                             "npm install -g backlog.md"))
        else:
            fine.append(f"backlog project {settings.backlog.path}")
    for name, spec in sorted(settings.commands.items()):
        if shutil.which(spec.view[0], path=search) or Path(spec.view[0]).is_file():
            fine.append(f"cmd:{name}")
        else:
            problems.append((f"cmd:{name}: {spec.view[0]} is not installed", f"install "
                             f"{spec.view[0]}, or fix trackers.cmd.{name}.view in aq.yaml"))
    owed = _owed_posts(queue, linked)
    if owed:
        problems.append((f"{owed} tracker post(s) owed", "aq to-tracker --all sends them (a "
                         "running worker sends its own)"))
    if problems:
        detail = "; ".join(p for p, _ in problems) + (f" ({', '.join(fine)} fine)" if fine else "")
        return Check("trackers", WARN, detail, problems[0][1])
    return Check("trackers", OK, f"{', '.join(fine)}; {len(linked)} linked job(s), no post owed")


def _owed_posts(queue: Queue, linked: list[Job]) -> int:
    return sum(len(owed_posts(job, queue.read_events(job.id))) for job in linked)


def _has_remote(queue: Queue) -> bool:
    try:
        return queue.remote is not None
    except AqError:  # a broken aq.yaml, or a remote it names that is missing: other checks say so
        return False


def _not_checked(name: str, blocker: tuple[str, str]) -> Check:
    why, fix = blocker
    return Check(name, WARN, f"not checked: {why}", fix)


# --- git -------------------------------------------------------------------------------------

def _check_git(search: str, timeout: float) -> Check:
    exe = shutil.which("git", path=search)
    wanted = ".".join(map(str, MIN_GIT))
    if exe is None:
        return Check("git", FAIL, "git is not on PATH", f"install git ({wanted} or newer)")
    try:
        done = proc.run([exe, "--version"], env=proc.clean_env({"PATH": search}), timeout=timeout)
    except OSError as err:
        return Check("git", FAIL, f"{exe} cannot run: {err.strerror or err}", "reinstall git")
    found = version_in(done.stdout) if done.returncode == 0 else None
    version = parse_version(found) if found else None
    if found is None or version is None:
        said = _reason(done) if done.returncode else repr(done.stdout.strip()[:80])
        return Check("git", FAIL, f"`{exe} --version` gave no version: {said}", "reinstall git")
    if compare_versions(version, MIN_GIT) < 0:
        return Check("git", WARN, f"git {found} at {exe} is older than {wanted}",
                     f"upgrade git to {wanted} or newer")
    return Check("git", OK, f"git {found} at {exe}")


def _check_identity(root: Path, has_git: bool, heartbeats: bool) -> Check:
    """Who aq's commits (and heartbeats) are by: the identity git finds, or aq's fallback when
    git cannot name the committer (no user.email, or an empty user.name)."""
    if not has_git:
        return _not_checked("identity", NO_GIT)
    try:
        fallback = gitops.identity_args(root)
        done = gitops.git(root, *fallback, "var", "GIT_COMMITTER_IDENT", check=False)
    except AqError as err:
        return Check("identity", FAIL, str(err), "install git")
    if done.returncode != 0:
        return Check("identity", FAIL, f"git cannot commit as this user: {_reason(done)}",
                     f"git -C {shlex.quote(str(root))} config user.email you@example.com")
    ident = _ident(done)
    if not fallback:
        return Check("identity", OK, f"commits are by {ident}")
    return Check("identity", OK, f"no usable git identity: aq commits as {ident}")


def _ident(done: proc.Completed) -> str:
    """`git var GIT_COMMITTER_IDENT` without its timestamp and time zone."""
    return done.stdout.strip().rsplit(" ", 2)[0]


# --- the queue -------------------------------------------------------------------------------

def _check_queue(queue: Queue, snapshot: Snapshot, broken: str | None) -> Check:
    if broken is not None:
        return Check("queue", FAIL, broken, "fix aq.yaml (`aq lint` checks it)")
    counts = Counter(job.stage for job in snapshot.jobs)
    stages = ", ".join(f"{stage} {counts[stage]}" for stage in STAGES if counts[stage])
    summary = f"{queue.root}: {_count(len(snapshot.jobs), 'job')}" + (f" ({stages})" if stages else "")
    problems = [*snapshot.problems, *(job.error for job in snapshot.jobs if job.error)]
    if problems:
        return Check("queue", FAIL, f"{summary}; {_count(len(problems), 'problem')}, the first: "
                     f"{problems[0]}", "run `aq lint` to list them, then fix those files")
    if queue.git_dir is None:
        return Check("queue", WARN, f"{summary}; not in a git repository, so no change is recorded",
                     f"run `aq init {shlex.quote(str(queue.root))}` to make it one")
    return Check("queue", OK, summary)


def _check_halt(queue: Queue) -> Check:
    reason = queue.halted()
    if reason is None:
        return Check("halt", OK, "not halted")
    return Check("halt", WARN, f"queue/HALT: {reason}; no worker claims a job",
                 "`aq resume` once the reason no longer holds")


def _check_workspaces(root: Path) -> Check:
    """The disk the repo caches (shared by the machine's queues) and this queue's worktrees take
    on this machine (jobs with repo:)."""
    shared = caches_dir(root)
    if not root.is_dir() and not shared.is_dir():
        return Check("workspaces", OK, f"none yet ({root})")
    caches = [p for p in shared.glob("*") if p.is_dir()] if shared.is_dir() else []
    trees = [p for p in (root / "worktrees").glob("*") if p.is_dir()] \
        if (root / "worktrees").is_dir() else []
    used = sum(f.stat().st_size for folder in (root, shared) if folder.is_dir()
               for f in folder.rglob("*") if f.is_file() and not f.is_symlink())
    detail = (f"{used / (1 << 20):.1f} MiB in {root.parent}: {len(caches)} repo cache(s), "
              f"{len(trees)} worktree(s)")
    if trees:
        return Check("workspaces", OK, detail + " (of running jobs, or left by a killed worker: "
                     "the next aq run here cleans those)")
    return Check("workspaces", OK, detail)


def _check_disk(root: Path) -> Check:
    try:
        free = shutil.disk_usage(root).free
    except OSError as err:
        return Check("disk", WARN, f"cannot tell the free space at {root}: {err.strerror or err}",
                     "check that the queue's folder is readable")
    detail = f"{free / (1 << 30):.1f} GiB free at {root}"
    if free < LOW_DISK:
        return Check("disk", WARN, detail, "free some space there: attempt logs, artifacts and "
                     "git objects are written to it")
    return Check("disk", OK, detail)


# --- the remote ------------------------------------------------------------------------------

def _check_remote(queue: Queue, config: QueueConfig, timeout: float
                  ) -> tuple[Check, Remote | None, bool]:
    """The remote check, the remote, and whether it was fetched just now."""
    try:
        remote = queue.remote
    except AqError as err:
        return Check("remote", FAIL, str(err), f"add it (`git remote add {config.remote} URL`) or "
                     "remove `remote:` from aq.yaml"), None, False
    if remote is None:
        return Check("remote", OK, "local queue, no remote"), None, False
    url = gitops.git(queue.root, "remote", "get-url", remote.name, check=False).stdout.strip()
    where = f"{remote.name} {_scrub(url)}"
    asked = gitops.git(queue.root, "ls-remote", "-q", remote.name, f"refs/heads/{remote.branch}",
                       check=False, timeout=timeout)
    if asked.returncode != 0:
        why = f"no answer in {timeout:g}s" if asked.returncode == proc.TIMED_OUT else _reason(asked)
        return Check("remote", FAIL, f"{where} is unreachable: {why}",
                     f"check the URL (`git remote set-url {remote.name} URL`), the network and "
                     "your credentials"), remote, False
    problem = _fetch(queue, remote, timeout)
    if problem:
        return Check("remote", FAIL, f"{where} answers, but fetching from it failed: {problem}",
                     "try again; if it persists, `git fetch` shows git's own words"), remote, False
    return _compare(queue, remote, where), remote, True


def _fetch(queue: Queue, remote: Remote, timeout: float) -> str | None:
    """Fetch under the clone's lock (a worker fetching at the same time would fail on its ref
    locks); None when it worked, else why not."""
    try:
        with queue.lock(timeout=timeout):
            return None if queue.fetch(remote) else "git fetch failed"
    except AqError as err:
        return str(err)


def _compare(queue: Queue, remote: Remote, where: str) -> Check:
    """How this clone's branch stands against the remote's, as just fetched."""
    name, branch = remote.name, remote.branch
    if remote.tip() is None:
        return Check("remote", WARN, f"{where} is reachable but has no branch {branch} yet",
                     f"push it: git push {name} HEAD:{branch}")
    counted = gitops.git(queue.root, "rev-list", "--left-right", "--count",
                         f"HEAD...{remote.tracking}", check=False).stdout.split()
    ahead, behind = (int(counted[0]), int(counted[1])) if len(counted) == 2 else (0, 0)
    if ahead:
        subjects = gitops.git(queue.root, "log", "--format=%s", f"{remote.tracking}..HEAD",
                              check=False).stdout.splitlines()
        theirs = [subject for subject in subjects if not subject.startswith("aq:")]
        if theirs:  # never a rebase: aq's claims must not be replayed onto another tip
            return Check("remote", WARN, f"{where}: this clone has {_count(len(theirs), 'commit')} "
                         "of a person's that the remote lacks; aq's next change keeps them on a "
                         "branch aq-kept/<commit> and goes on without them",
                         f"if they apply on {name}/{branch}: git push {name} HEAD:{branch}; else "
                         f"git branch keep-mine && git reset --keep {name}/{branch}")
        return Check("remote", WARN, f"{where}: this clone holds {_count(ahead, 'commit')} of "
                     "aq's that the remote lacks (work done while it was away)",
                     "the next 'aq run' here sends them; never rebase them by hand")
    if behind:
        return Check("remote", WARN, f"{where}: this clone is {_count(behind, 'commit')} behind",
                     f"aq catches up at its next change; now: git pull --ff-only {name} {branch}")
    return Check("remote", OK, f"{where}: reachable, {branch} up to date")


# --- engines ---------------------------------------------------------------------------------

def _check_engines(config: QueueConfig, capabilities: frozenset[str], search: str,
                   default_role: str) -> list[Check]:
    default = config.default_engine
    checks = []
    if default not in config.engines:
        known = ", ".join(config.engines)
        checks.append(Check(f"engine:{default}", FAIL,
                            f"{default_role} engine {default!r} is not an engine aq knows ({known})",
                            f"set default_engine to one of them, or add engines.{default} to aq.yaml"))
    for name, spec in config.engines.items():
        role = f" ({default_role} engine)" if name == default else ""
        command = spec.cmd[0]
        if f"engine:{name}" in capabilities:
            checks.append(_installed_engine(name, spec, search, role))
        elif name == default:
            checks.append(Check(f"engine:{name}", FAIL, f"{command!r} is not on PATH{role}: jobs "
                                "that name no engine cannot run here",
                                f"install {command}, or set default_engine in aq.yaml to an "
                                "engine this machine has"))
        else:
            checks.append(Check(f"engine:{name}", WARN, f"{command!r} is not on PATH: this worker "
                                f"takes no {name} job", f"install {command} if this machine "
                                f"should run {name} jobs"))
    return checks


def _installed_engine(name: str, spec: EngineSpec, search: str, role: str) -> Check:
    """An engine on PATH: where, which version, and whether it can run unattended here."""
    found = shutil.which(spec.cmd[0], path=search) or spec.cmd[0]
    env = {**os.environ, "PATH": search}
    version = engine_version(found, env, timeout=10.0) if spec.program != "bash" else None
    usage = "" if spec.usage or spec.program == "bash" else "; no usage reader: runs record no cost"
    detail = f"{found}{f' ({version})' if version else ''}{role}{usage}"
    problems = headless_problems(spec, env, root=hasattr(os, "geteuid") and os.geteuid() == 0)
    if problems:
        return Check(f"engine:{name}", WARN, f"{detail}; cannot run headless here", problems[0])
    return Check(f"engine:{name}", OK, detail)


# --- leases ----------------------------------------------------------------------------------

def _check_leases(queue: Queue, config: QueueConfig, snapshot: Snapshot, remote: Remote | None,
                  fetched: bool, now: float, timeout: float) -> Check:
    building = [job for job in snapshot.jobs if job.stage is Stage.BUILDING]
    if not building:
        return Check("leases", OK, "no job in building")
    if remote is not None and not fetched:
        return Check("leases", WARN, f"cannot tell whether the {_count(len(building), 'building job')}"
                     " are alive: the remote did not answer", "fix the remote, then run "
                     "`aq doctor` again")
    try:
        troubles = _lease_troubles(queue, config, building, remote, now, timeout)
    except AqError as err:
        return Check("leases", WARN, f"not checked: {err}", "run `aq doctor` again")
    if not troubles:
        return Check("leases", OK, f"{_count(len(building), 'building job')}, no holder silent "
                     "as far as this machine can see")
    listed = "; ".join(f"{job_id} ({why})" for job_id, why in troubles)
    return Check("leases", WARN, f"{len(troubles)} of {_count(len(building), 'building job')} "
                 f"not seen renewed: {listed}",
                 f"a worker takes a job back once its lease is silent for lease_ttl "
                 f"({format_duration(config.lease_ttl)}); `aq workers` shows who is alive")


def _lease_troubles(queue: Queue, config: QueueConfig, building: list[Job], remote: Remote | None,
                    now: float, timeout: float) -> list[tuple[str, str]]:
    """(job id, why) for each building job whose holder this machine has not seen alive."""
    held = {job.state.token: job for job in building if job.state.token}
    silence: dict[str, float] = {}
    seen: dict[str, Any] = {}
    if remote is not None:
        observer = LeaseObserver(queue.state_dir / "leases.json")
        with queue.lock(timeout=timeout):  # the record is shared by every aq on this machine
            silence, _ = observer.observe(remote, now, {token: str(job.state.holder)
                                                        for token, job in held.items()},
                                          gap=watch_gap(config.lease_ttl, config.poll))
        seen = observer.workers(now)
    every = heartbeat_every(config.lease_ttl, config.heartbeat_interval)
    quiet = min(2 * every, every + config.lease_ttl / 4)  # a renewal well overdue
    host = socket.gethostname()
    troubles = [(job.id, "no claim event: it holds no lease") for job in building
                if not job.state.token]
    for token, job in held.items():
        state = job.state
        if state.holder_host == host and state.holder_pid and not proc.pid_alive(state.holder_pid):
            troubles.append((job.id, f"worker {state.holder} (pid {state.holder_pid}) on this "
                             "host is gone"))
        elif remote is not None and state.holder not in seen:
            troubles.append((job.id, f"no heartbeat from {state.holder} on the remote"))
        elif remote is not None and silence.get(token, 0.0) > quiet:
            troubles.append((job.id, f"{state.holder} has not renewed it for "
                             f"{format_duration(silence[token])}"))
    return sorted(troubles)


# --- helpers ---------------------------------------------------------------------------------

def _count(number: int, word: str) -> str:
    return f"{number} {word}" + ("" if number == 1 else "s")


def _reason(done: proc.Completed) -> str:
    """git's own words for a failure: its fatal:/error: line, else its last line."""
    lines = [line.strip() for line in (done.stderr.strip() or done.stdout.strip()).splitlines()]
    chosen = next((line for line in lines if line.startswith(("fatal:", "error:"))),
                  lines[-1] if lines else f"exit code {done.returncode}")
    return _scrub(chosen)


_HTTP_USERINFO = re.compile(r"(?i)(https?://)[^/@\s]+@")
_PASSWORD = re.compile(r"(://[^/:@\s]*):[^/@\s]+@")


def _scrub(text: str) -> str:
    """A URL or message without credentials: an http(s) URL's user part is a token more often
    than a name; any other URL keeps its user name but not its password."""
    text = _HTTP_USERINFO.sub(rf"\g<1>{REDACTED}@", text)
    text = _PASSWORD.sub(rf"\g<1>:{REDACTED}@", text)
    return Scrubber({}).line(text)
