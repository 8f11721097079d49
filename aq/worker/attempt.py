"""Running one attempt of a claimed job: engine, then verify, with a scrubbed and capped log.

Nothing here moves the job: `execute` returns an `AttemptResult` and the worker decides and
records the move in a transaction (so a fenced, stale result changes nothing).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from aq.core.lifecycle import Outcome
from aq.core.manifest import Manifest
from aq.core.scrub import Scrubber
from aq.errors import AqError
from aq.infra import proc
from aq.infra.engines import ArgvError, EngineSpec, engine_version
from aq.infra.proctree import new_mark
from aq.infra.repos import Workspace, commit_leftovers, open_workspace, push_branch, resolve_repo
from aq.infra.scope import TreeMark, changed_against, changed_since, mark_tree, outside_scope
from aq.infra.usage import Usage, reader_for
from aq.store.config import QueueConfig
from aq.trackers.base import secret_names
from aq.usecases.spend import Meter, Spend, describe_usage

TAIL_LINES = 40
TAIL_CHARS = 4000  # the tail goes into the event log and the next prompt: kept short


@dataclass(frozen=True, slots=True)
class AttemptPlan:
    """What a claim hands to `execute`."""

    job_id: str
    attempt: int
    token: str
    worker: str
    manifest: Manifest
    queue_root: Path
    run_dir: Path  # this attempt's private folder: running log, prompt file
    previous_failure: str | None = None
    wall_used: float = 0.0
    persona: str | None = None
    workspaces: Path | None = None  # where a job with a repo gets its worktree (None: no repo work)
    usd_used: float = 0.0  # what the job's earlier attempts cost, for budget.usd
    tokens_used: int = 0  # and the tokens they used, for budget.tokens
    resume: tuple[Usage, str] | None = None  # retry-from: session: its usage (session id) and cwd


@dataclass(frozen=True, slots=True)
class AttemptResult:
    outcome: Outcome
    verified: bool | None  # None: the job has no verify
    exit_code: int | None
    verify_exit: int | None
    detail: str  # one line: what happened
    tail: str  # the tail of the failing part's output, for the next attempt's prompt
    log_path: Path  # the running log (scrubbed)
    log_text: str  # the log as it is kept in the queue: scrubbed and capped
    duration: float
    cwd: Path | None
    artifacts: tuple[Path, ...] = field(default=())
    out_of_scope: tuple[str, ...] = ()  # files the engine changed outside allowed-scope
    workspace: Workspace | None = None  # the attempt's worktree, for a job with a repo
    head: str | None = None  # the worktree's last commit once the engine's work was committed
    pushed: bool = False  # the job's branch on the repo's remote holds `head`
    scope_against_base: bool = False  # out_of_scope is the whole branch against base
    usage: Usage | None = None  # what the engine reported it used (None: it said nothing)
    engine: str | None = None
    engine_version: str | None = None
    leftovers: int = 0  # processes the attempt left running, killed when it ended
    session_usage: Usage | None = None  # the session's running total, where `usage` is this run's


class AttemptLog:
    """The attempt's output: streamed to a file for `aq logs -f`, kept head+tail within `cap` bytes."""

    def __init__(self, path: Path, cap: int, scrubber: Scrubber) -> None:
        self.path = path
        self.cap = max(cap, 1024)
        self.scrubber = scrubber
        self._file = open(path, "ab")  # noqa: SIM115 - closed by close()
        self._lock = threading.Lock()
        self._head: list[bytes] = []
        self._head_size = 0
        self._tail: deque[bytes] = deque()
        self._tail_size = 0
        self._cut = 0
        self._written = 0
        self.section: deque[str] = deque(maxlen=TAIL_LINES)
        self.failed: OSError | None = None  # the running log file could not be written

    def stream(self) -> Callable[[bytes], None]:
        """A writer for a second stream (stderr), scrubbed with a state of its own."""
        scrubber = self.scrubber.fork()
        return lambda raw: self.write(raw, scrubber)

    def write(self, raw: bytes, scrubber: Scrubber | None = None) -> None:
        text = (scrubber or self.scrubber).line(raw.decode("utf-8", errors="replace"))
        data = text.encode()
        with self._lock:
            self.section.append(text.rstrip("\n"))
            if self._written < 8 * self.cap and not self._file.closed and self.failed is None:
                try:
                    self._file.write(data)
                    self._file.flush()
                except OSError as err:  # a full disk: the running log stops, the kept one goes on
                    self.failed = err
                self._written += len(data)
            if self._head_size + len(data) <= self.cap // 2 and not self._tail:
                self._head.append(data)
                self._head_size += len(data)
                return
            self._tail.append(data)
            self._tail_size += len(data)
            while self._tail_size > self.cap // 2 and len(self._tail) > 1:
                dropped = self._tail.popleft()
                self._tail_size -= len(dropped)
                self._cut += len(dropped)

    def note(self, text: str) -> None:
        """A line of aq's own in the log (headers, outcomes)."""
        self.write(f"[aq] {text}\n".encode())

    def start_section(self) -> None:
        self.section.clear()

    def kept_text(self) -> str:
        with self._lock:
            middle = [f"[aq] ... {self._cut} bytes cut to keep this log under {self.cap} bytes ...\n"
                      .encode()] if self._cut else []
            return b"".join([*self._head, *middle, *self._tail]).decode("utf-8", errors="replace")

    def close(self) -> None:
        with self._lock, contextlib.suppress(OSError):
            self._file.close()


def build_prompt(plan: AttemptPlan) -> str:
    """Persona, then the job body, then (on a retry) what went wrong last time."""
    parts = []
    if plan.persona:
        parts.append(plan.persona.strip())
    parts.append(plan.manifest.body.strip())
    if plan.previous_failure:
        parts.append(
            "The previous attempt at this job failed. The end of its output:\n\n```\n"
            + plan.previous_failure.strip() + "\n```\n\nFix the cause of that failure."
        )
    return "\n\n---\n\n".join(parts) + "\n"


def resolve_cwd(manifest: Manifest, queue_root: Path) -> Path:
    if not manifest.cwd:
        return queue_root
    path = Path(os.path.expanduser(manifest.cwd))
    return path if path.is_absolute() else (queue_root / path)


def execute(
    plan: AttemptPlan,
    config: QueueConfig,
    *,
    stop: threading.Event,
    log_note: Callable[[str], None] = lambda _: None,
    clock: Callable[[], float] = time.monotonic,
) -> AttemptResult:
    """Run the engine and then verify for one attempt. Never raises for a job's own failures."""
    started = clock()
    manifest = plan.manifest
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    env = proc.clean_env({
        "AQ_JOB_ID": plan.job_id,
        "AQ_ATTEMPT": str(plan.attempt),
        "AQ_QUEUE": str(plan.queue_root),
        "AQ_WORKER_ID": plan.worker,
    })
    engine_name = config.engine_for(manifest)
    spec = config.engines.get(engine_name)
    # the engine's own env holds secrets too; and aq.yaml names tracker credentials
    scrubber = Scrubber({**env, **(spec.env if spec else {})}, secret_names(config.trackers))
    log = AttemptLog(plan.run_dir / f"{plan.attempt}.log", config.log_max, scrubber)
    cwd = resolve_cwd(manifest, plan.queue_root)
    workspace: Workspace | None = None
    repo = config.repo_for(manifest)
    work: dict[str, object] = {"head": None, "pushed": False}
    engine_run = EngineRun(engine_name)
    if repo and plan.workspaces is not None:
        try:
            workspace = open_workspace(resolve_repo(repo, plan.queue_root), plan.job_id, plan.attempt, root=plan.workspaces,
                                       base=config.base_for(manifest),
                                       from_base=manifest.retry_from == "base")
        except AqError as err:
            log.note(f"workspace: {err}")
            log.close()
            return AttemptResult(Outcome.ENGINE_FAILED, None, None, None,
                                 f"could not make the job's worktree: {err}", scrubber.text(str(err)),
                                 log.path, log.kept_text(), clock() - started, None)
        sub = Path(os.path.expanduser(manifest.cwd)) if manifest.cwd else None
        cwd = workspace.path / sub if sub is not None and not sub.is_absolute() else workspace.path
        log.note(f"workspace: {workspace.path} on {workspace.branch} from {workspace.start[:12]}")
    scope = ScopeWatch(manifest.allowed_scope, cwd, plan.queue_root)

    def finish(outcome: Outcome, detail: str, *, verified: bool | None = None,
               exit_code: int | None = None, verify_exit: int | None = None) -> AttemptResult:
        tail = "\n".join(log.section)[-min(TAIL_CHARS, config.log_max // 2):] if outcome is not Outcome.OK else ""
        if outcome is not Outcome.OK:
            tail = f"{tail}\n[{outcome}: {detail}]".lstrip("\n")
        artifacts = collect_artifacts(manifest, cwd, log.note) if cwd.is_dir() else ()
        log.note(f"outcome: {outcome} ({detail})")
        log.close()
        outside = tuple(scrubber.line(path) for path in scope.outside)
        return AttemptResult(outcome, verified, exit_code, verify_exit, scrubber.line(detail),
                             scrubber.text(tail), log.path, log.kept_text(), clock() - started,
                             cwd if cwd.is_dir() else None, artifacts, outside, workspace,
                             work["head"] if isinstance(work["head"], str) else None,
                             bool(work["pushed"]), scope.against is not None,
                             scrubbed(engine_run.usage, scrubber), engine_name if spec else None,
                             engine_run.version, engine_run.leftovers,
                             scrubbed(engine_run.reported, scrubber))

    log.note(f"job {plan.job_id} attempt {plan.attempt} by {plan.worker} in {cwd}")
    if not cwd.is_dir():
        return finish(Outcome.ENGINE_FAILED, f"cwd {cwd} does not exist on this machine")
    budget_left = None
    if manifest.budget and manifest.budget.wall:
        budget_left = manifest.budget.wall - plan.wall_used
        if budget_left <= 0:
            return finish(Outcome.BUDGET_EXHAUSTED,
                          f"budget.wall of {manifest.budget.wall:.0f}s is used up")
    spent = Spend.of(plan.manifest.budget, plan.usd_used, plan.tokens_used, spec)
    if spent.exhausted():
        return finish(Outcome.BUDGET_EXCEEDED, spent.exhausted() or "")
    limit = config.timeout_for(manifest)
    if budget_left is not None:
        limit = min(limit, budget_left)
    deadline = started + limit

    if spec is None:
        known = ", ".join(sorted(config.engines))
        return finish(Outcome.ENGINE_MISSING,
                      f"engine {engine_name!r} is not defined (known: {known}); add it under engines: in aq.yaml")
    resumed, session = resumable(plan, spec, cwd, log)
    prompt = resume_prompt(plan) if session else build_prompt(plan)
    text = manifest.body if spec.input == "body" else prompt
    prompt_file = plan.run_dir / f"{plan.attempt}.prompt"
    usage_file = plan.run_dir / f"{plan.attempt}.usage"
    env.update({"AQ_PROMPT_FILE": str(prompt_file), **spec.env,
                **(spec.yolo_env if manifest.yolo else {})})
    try:
        prompt_file.write_text(text, encoding="utf-8")
        if plan.previous_failure:
            failure_file = plan.run_dir / f"{plan.attempt}.previous-failure"
            failure_file.write_text(plan.previous_failure, encoding="utf-8")
            env["AQ_PREVIOUS_FAILURE_FILE"] = str(failure_file)
    except OSError as err:
        return finish(Outcome.ENGINE_FAILED, f"could not write the prompt into {plan.run_dir}: "
                      f"{err.strerror or err}")
    try:
        argv = spec.argv(prompt=prompt, prompt_file=str(prompt_file), yolo=manifest.yolo,
                         session=session, usd=spent.usd_left, usage_file=str(usage_file))
    except ArgvError as err:
        return finish(Outcome.ENGINE_FAILED, str(err))
    if stop.is_set():  # the worker was told to stop before this attempt got going
        return finish(Outcome.INTERRUPTED, "stopped before the engine started")
    program = shutil.which(argv[0], path=env.get("PATH"))
    if program is None and not os.path.isfile(argv[0]):
        return finish(Outcome.ENGINE_MISSING,
                      f"engine {engine_name!r} needs {argv[0]!r}, which is not installed on this machine")

    log_note(f"running {engine_name}")
    engine_run.version = engine_version(program or argv[0], env,
                                        cache=plan.run_dir.parent.parent / "engine-versions.json")
    scope.start()
    log.note(f"engine {engine_name}"
             + (f" ({engine_run.version})" if engine_run.version else "")
             + f": {_show_argv(argv, spec)}" + (f" (resuming session {session})" if session else ""))
    if spent.unenforced:
        log.note(spent.unenforced)
    log.start_section()
    pgid_file = plan.run_dir / f"{plan.attempt}.pgid"
    reader = reader_for(spec.usage) if spec.usage else None
    meter = Meter(reader, spent, config, resumed,
                  live=plan.run_dir / f"{plan.attempt}.usage.json", clock=clock)
    mark = new_mark()
    _write_text(plan.run_dir / f"{plan.attempt}.mark", mark)
    ran = proc.run_streaming(argv, cwd=cwd, env=env, sink=log.write, deadline=deadline,
                             stop=stop, grace=config.kill_grace, clock=clock,
                             on_start=lambda pgid: _write_text(pgid_file, str(pgid)),
                             stdin=text.encode() if spec.input == "stdin" else None,
                             on_stdout=meter.feed if reader else None, limit=meter.over,
                             mark=mark, err_sink=log.stream() if reader else None)
    engine_run.usage = meter.close(usage_file)
    engine_run.reported = meter.reported if meter.resumed is not None else None
    engine_run.leftovers = ran.leftovers
    if ran.leftovers:
        log.note(f"the engine left {ran.leftovers} process(es) running; killed")
    if ran.ended not in ("missing", "unstartable"):
        if workspace is not None:  # whatever the agent left is work too: commit it, push it
            _keep_work(workspace, plan, log, work)
        # a job's branch is judged as a whole, against base: what an earlier attempt did and
        # this one undid no longer counts, what it left still does
        for note in scope.check(f"refs/remotes/origin/{workspace.base}" if workspace else None):
            log.note(note)
    if engine_run.usage is not None:
        log.note(f"usage: {describe_usage(engine_run.usage)}")
    if ran.ended == "missing":
        return finish(Outcome.ENGINE_MISSING, f"could not start {argv[0]!r}")
    if ran.ended == "unstartable":
        return finish(Outcome.ENGINE_FAILED,
                      f"could not start {argv[0]!r} (a prompt too long for a command line? "
                      "use input: stdin or {prompt_file} in the engine's cmd)")
    # stopped by aq as its usage crossed the budget, or by the CLI at the cap aq gave it; a run
    # that ended on its own is judged as any other (what it cost still counts for the next)
    capped = meter.capped(engine_run.usage)
    if ran.ended == "limit" or capped:
        return finish(Outcome.BUDGET_EXCEEDED, meter.crossed or capped or "the job's budget is used up",
                      exit_code=ran.returncode)
    if spent.usd_left is not None and engine_run.usage is not None and engine_run.usage.cost_usd is None:
        log.note("budget.usd not enforced: the engine reported no cost and aq.yaml prices: has "
                 f"no price for {', '.join(engine_run.usage.models) or 'its model'}")
    if ran.ended == "stopped":
        return finish(Outcome.INTERRUPTED, "stopped while the engine ran")
    if ran.ended == "timeout":
        return finish(Outcome.TIMEOUT, f"engine ran past the {limit:.0f}s limit")
    if ran.returncode != 0:
        return finish(Outcome.ENGINE_FAILED, f"engine exited with {ran.returncode}",
                      exit_code=ran.returncode)
    cli_error = engine_run.usage.cli_error if engine_run.usage else None
    if cli_error:
        return finish(Outcome.ENGINE_FAILED, f"engine exited 0 but reported a failure: {cli_error}",
                      exit_code=0)
    if not manifest.verify:
        return finish(Outcome.OK, "engine exited 0; no verify" + _denied(engine_run.usage),
                      exit_code=0)

    log.note(f"verify: {manifest.verify}")
    log.start_section()
    checked = proc.run_streaming(["bash", "-c", manifest.verify], cwd=cwd, env=env, sink=log.write,
                                 deadline=deadline, stop=stop, grace=config.kill_grace, clock=clock,
                                 on_start=lambda pgid: _write_text(pgid_file, str(pgid)),
                                 mark=mark)
    if checked.ended == "stopped":
        return finish(Outcome.INTERRUPTED, "stopped while verify ran", exit_code=0)
    if checked.ended == "timeout":
        return finish(Outcome.TIMEOUT, f"verify ran past the {limit:.0f}s limit", exit_code=0)
    if checked.ended in ("missing", "unstartable"):
        return finish(Outcome.VERIFY_FAILED, "bash is not installed", exit_code=0)
    if checked.returncode != 0:
        return finish(Outcome.VERIFY_FAILED, f"verify exited with {checked.returncode}",
                      verified=False, exit_code=0, verify_exit=checked.returncode)
    return finish(Outcome.OK, "engine exited 0; verify passed" + _denied(engine_run.usage),
                  verified=True, exit_code=0, verify_exit=0)


@dataclass(slots=True)
class EngineRun:
    """What an attempt learnt about its engine run, for the result."""

    name: str
    version: str | None = None
    usage: Usage | None = None
    reported: Usage | None = None
    leftovers: int = 0


def scrubbed(usage: Usage | None, scrubber: Scrubber) -> Usage | None:
    """The CLI's own words in its usage (its error text, session, model names) go into
    committed events: scrubbed like the log."""
    if usage is None:
        return None
    clean = scrubber.fork()

    def line(text: str | None) -> str | None:
        return None if text is None else clean.line(text)

    return replace(usage, cli_error=line(usage.cli_error), session=line(usage.session),
                   models=tuple(clean.line(model) for model in usage.models))


def resumable(plan: AttemptPlan, spec: EngineSpec, cwd: Path, log: AttemptLog
              ) -> tuple[Usage | None, str | None]:
    """The earlier run's usage and session to resume, when this engine can and the session
    lives in this attempt's folder; else a fresh session (said in the log)."""
    if plan.resume is None or not spec.can_resume:
        return None, None
    usage, where = plan.resume
    if where and Path(where) != cwd:
        log.note(f"not resuming session {usage.session}: it ran in {where}, this attempt runs in "
                 f"{cwd}; a fresh session gets the failure instead")
        return None, None
    return usage, usage.session


def _denied(usage: Usage | None) -> str:
    if usage is None or not usage.permission_denials:
        return ""
    return f" ({usage.permission_denials} tool call(s) denied: the job does not set yolo)"


def resume_prompt(plan: AttemptPlan) -> str:
    """The prompt of a resumed session: the agent remembers the job; tell it what failed."""
    if not plan.previous_failure:
        return build_prompt(plan)
    return ("Your previous attempt at this job failed. The end of its output:\n\n```\n"
            + plan.previous_failure.strip() + "\n```\n\nFix the cause of that failure.\n")




def _keep_work(workspace: Workspace, plan: AttemptPlan, log: AttemptLog,
               work: dict[str, object]) -> None:
    """Commit what the engine left uncommitted in the job's worktree and push the job's branch,
    so the work never exists on this machine alone. A push that fails is tried again by the
    worker before it records the result."""
    from aq.infra.gitops import git, identity_args

    try:
        made = commit_leftovers(workspace, f"aq: {plan.job_id} attempt {plan.attempt}: work the "
                                f"agent left uncommitted", identity_args(workspace.path))
        if made:
            log.note(f"workspace: committed what the agent left uncommitted ({made[:12]})")
        work["head"] = git(workspace.path, "rev-parse", "HEAD").stdout.strip()
        work["pushed"] = push_branch(workspace)
        log.note(f"workspace: {workspace.branch} at {str(work['head'])[:12]} "
                 + ("pushed" if work["pushed"] else "NOT pushed yet (tried again before the move)"))
    except AqError as err:
        log.note(f"workspace: {err}")


class ScopeWatch:
    """`allowed-scope`: which files the engine changed outside the job's globs, judged on the
    git work tree holding cwd (aq's own queue files are never counted)."""

    def __init__(self, globs: tuple[str, ...] | None, cwd: Path, queue_root: Path) -> None:
        self.globs, self.cwd, self.queue_root = globs, cwd, queue_root
        self.mark: TreeMark | None = None
        self.outside: tuple[str, ...] = ()
        self.against: str | None = None  # the base the files were judged against, if any

    def start(self) -> None:
        if self.globs is not None:
            self.mark = mark_tree(self.cwd)

    def check(self, against: str | None = None) -> list[str]:
        """Notes for the log; sets `outside`. With `against` (a job branch's base) the files
        are those the tree changes against it, else those the run changed."""
        if self.globs is None:
            return []
        if self.mark is None:
            return [f"allowed-scope not checked: {self.cwd} is not in a git work tree"]
        try:
            changed = changed_against(self.mark.root, against) if against else changed_since(self.mark)
            self.against = against
        except AqError as err:
            return [f"allowed-scope not checked: {err}"]
        top = self.mark.root
        base = _relative_posix(self.cwd.resolve(), top)
        queue = _relative_posix(self.queue_root.resolve(), top)
        if queue is not None:  # the queue lives in this tree: its own files change under aq
            managed = tuple(f"{queue}/{p}".lstrip("/") for p in ("queue/", "aq.yaml", "profiles/"))
            changed = [path for path in changed
                       if not any(path == m.rstrip("/") or path.startswith(m) for m in managed)]
        self.outside = tuple(outside_scope(changed, self.globs, base or ""))
        if not self.outside:
            return [f"allowed-scope: {len(changed)} changed file(s), all in scope"]
        shown = ", ".join(self.outside[:10]) + (" …" if len(self.outside) > 10 else "")
        return [f"allowed-scope: {len(self.outside)} file(s) changed outside "
                f"{', '.join(self.globs) or '(nothing allowed)'}: {shown}"]


def _relative_posix(path: Path, top: Path) -> str | None:
    """`path` under `top` as a/b ("" for top itself), or None when it is not under it."""
    try:
        rel = path.relative_to(top).as_posix()
    except ValueError:
        return None
    return "" if rel == "." else rel


def _show_argv(argv: list[str], spec: EngineSpec) -> str:
    """The command line for the log, with the (long) prompt shown as a placeholder."""
    shown = []
    for part in argv:
        shown.append("<prompt>" if len(part) > 80 and spec.input == "prompt" else part)
    return " ".join(shown)


def collect_artifacts(manifest: Manifest, cwd: Path,
                      note: Callable[[str], None] = lambda _line: None) -> tuple[Path, ...]:
    """The regular files under cwd that the artifact globs match. A link, a file reached
    through a linked folder, or one outside cwd is never kept: `note` says which (a line for
    the attempt's log)."""
    from aq.infra.confine import refusal

    found: dict[Path, None] = {}
    for pattern in manifest.artifacts:
        for path in sorted(cwd.glob(pattern)):
            if path in found or (path.is_dir() and not path.is_symlink()):
                continue
            refused = refusal(cwd, path, where="the job's cwd")
            if refused is not None:
                note(f"artifact not kept: {refused}")
            elif path.is_file():
                found[path] = None
    return tuple(found)


def _write_text(path: Path, text: str) -> None:
    """A note for a worker that finds this attempt's leftovers after a crash: worth trying,
    never worth failing the attempt for."""
    with contextlib.suppress(OSError):
        path.write_text(text, encoding="utf-8")


def crashed_attempt(plan: AttemptPlan, err: BaseException) -> AttemptResult:
    """The result of an attempt that raised instead of returning: an engine failure, kept."""
    detail = f"aq could not run the attempt: {type(err).__name__}: {err}"
    return AttemptResult(Outcome.ENGINE_FAILED, None, None, None, detail, detail,
                         plan.run_dir / f"{plan.attempt}.log", f"[aq] {detail}\n", 0.0, None)
