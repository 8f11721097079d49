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
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from aq.core.lifecycle import Outcome
from aq.core.manifest import Manifest
from aq.core.scrub import Scrubber
from aq.core.usage import Usage
from aq.errors import AqError
from aq.infra import mcpconfig, proc
from aq.infra.engines import ArgvError, EngineSpec, engine_version
from aq.infra.gitops import git, identity_args
from aq.infra.proctree import new_mark
from aq.infra.repocache import resolve_repo
from aq.infra.repos import Workspace, commit_leftovers, open_workspace, push_branch
from aq.infra.rundir import RunFiles
from aq.infra.usage.registry import reader_for
from aq.store.config import QueueConfig
from aq.trackers.settings import secret_names
from aq.usecases.spend import Meter, Spend, describe_usage
from aq.worker.attemptlog import AttemptLog
from aq.worker.ending import Ending, denied, engine_ending, verify_ending
from aq.worker.plan import AttemptPlan
from aq.worker.prompts import engine_prompt
from aq.worker.review import Reviewer
from aq.worker.samples import Adopted, Sampler
from aq.worker.workdir import ScopeWatch, collect_artifacts

TAIL_CHARS = 4000  # the tail goes into the event log and the next prompt: kept short


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
    adopted: Adopted | None = None  # best of N: the winning sample's work, now the job's


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
    children: Callable[[], tuple[str, ...]] = lambda: (),
    reviewer: Reviewer | None = None,
    sampler: Sampler | None = None,
) -> AttemptResult:
    """Run the engine and then verify for one attempt (`children`: the job's children still in
    the workers' hands, asked once the engine is done; `sampler`: a job with samples runs no
    engine, its samples do). Never raises for a job's own failures."""
    attempt = Attempt(plan, config, stop=stop, clock=clock, children=children)
    attempt.reviewer = reviewer
    attempt.sampler = sampler
    if attempt.unmade is not None:
        return attempt.without_workspace(attempt.unmade)
    return attempt.result(attempt.run(log_note))


@dataclass(frozen=True, slots=True)
class Window:
    """How long the attempt's processes may run, and the mark each of them carries."""

    limit: float  # the seconds engine and verify may run
    deadline: float
    mark: str  # carried by every process of the attempt, for the tool kill


@dataclass(frozen=True, slots=True)
class Launch:
    """What the engine runs with, once nothing keeps the attempt from starting it."""

    spec: EngineSpec
    argv: list[str]
    program: str | None  # argv[0] as found on PATH
    text: str  # the prompt as the engine reads it
    session: str | None  # the session resumed, if any
    resumed: Usage | None  # that session's usage before this run
    spent: Spend
    window: Window


@dataclass(slots=True)
class EngineRun:
    """What an attempt learnt about its engine run and the work it left, for the result."""

    name: str
    version: str | None = None
    usage: Usage | None = None
    reported: Usage | None = None
    leftovers: int = 0
    head: str | None = None  # the worktree's last commit once the engine's work was committed
    pushed: bool = False  # the job's branch on the repo's remote holds `head`


class Attempt:
    """One attempt as it runs: its environment, log, cwd and worktree. Each step says how the
    attempt ended or lets the next one go on; `result` turns the ending into the result."""

    def __init__(self, plan: AttemptPlan, config: QueueConfig, *, stop: threading.Event,
                 clock: Callable[[], float],
                 children: Callable[[], tuple[str, ...]] = lambda: ()) -> None:
        self.plan, self.config, self.stop, self.clock = plan, config, stop, clock
        self.children = children
        self.reviewer: Reviewer | None = None  # the job's review gate, when it has one
        self.sampler: Sampler | None = None  # best of N: the job's samples do its work
        self.adopted: Adopted | None = None
        self.started = clock()
        plan.run_dir.mkdir(parents=True, exist_ok=True)
        self.files = RunFiles(plan.run_dir, plan.attempt)
        self.env = proc.clean_env({
            "AQ_JOB_ID": plan.job_id,
            "AQ_ATTEMPT": str(plan.attempt),
            "AQ_QUEUE": str(plan.queue_root),
            "AQ_WORKER_ID": plan.worker,
        })
        self.engine_name = config.engine_for(plan.manifest)
        self.spec = config.engines.get(self.engine_name)
        # the engine's own env holds secrets too; and aq.yaml names tracker credentials
        self.scrubber = Scrubber({**self.env, **(self.spec.env if self.spec else {})},
                                 secret_names(config.trackers))
        self.log = AttemptLog(self.files.log, config.log_max, self.scrubber)
        self.engine_run = EngineRun(self.engine_name)
        self.workspace: Workspace | None = None
        self.unmade: AqError | None = None  # the job's worktree could not be made
        try:
            self.workspace = _open_workspace(plan, config, self.log)
        except AqError as err:
            self.unmade = err
        if self.workspace is not None and plan.verify_only:  # it judges what the engine pushed
            self.engine_run.head = self.workspace.start
            self.engine_run.pushed = self.workspace.remote_tip == self.workspace.start
        self.cwd = _cwd(plan, self.workspace)
        self.scope = ScopeWatch(plan.manifest.allowed_scope, self.cwd, plan.queue_root)

    def without_workspace(self, err: AqError) -> AttemptResult:
        """The result of an attempt whose worktree could not be made: nothing ran."""
        self.log.note(f"workspace: {err}")
        self.log.close()
        return AttemptResult(
            outcome=Outcome.ENGINE_FAILED, verified=None, exit_code=None, verify_exit=None,
            detail=f"could not make the job's worktree: {err}", tail=self.scrubber.text(str(err)),
            log_path=self.log.path, log_text=self.log.kept_text(),
            duration=self.clock() - self.started, cwd=None)

    def run(self, log_note: Callable[[str], None]) -> Ending:
        """The engine, then verify: how the attempt ended."""
        if self.sampler is not None:
            return self._sampled(log_note)
        if self.plan.verify_only:
            return self._verify_only(log_note)
        launch = self._launch()
        if isinstance(launch, Ending):
            return launch
        log_note(f"running {self.engine_name}")
        ran, meter = self._run_engine(launch)
        ending = engine_ending(ran, meter, self.engine_run.usage, program=launch.argv[0],
                               limit=launch.window.limit, note=self.log.note)
        if ending is not None:
            return ending
        return self._after_engine(launch.window, "engine exited 0" + denied(self.engine_run.usage))

    def _sampled(self, log_note: Callable[[str], None]) -> Ending:
        """Best of N: the job's samples, asked for or judged; the winner's work reviewed."""
        assert self.sampler is not None
        samples, plan = self.plan.manifest.samples, self.plan
        self.log.note(f"job {plan.job_id} attempt {plan.attempt} by {plan.worker}: best of "
                      f"{samples}, each sample a job of its own")
        log_note(f"best of {samples}: asking for or judging its samples")
        ending, self.adopted = self.sampler.run(self.log, repo=self.config.repo_for(plan.manifest))
        if ending.outcome is Outcome.OK and self.reviewer is not None and self.adopted:
            return self.reviewer.judge(ending, self.log, self.cwd, branch=self.adopted.branch)
        return ending

    def _verify_only(self, log_note: Callable[[str], None]) -> Ending:
        """A parent whose children are settled: its verify alone. The engine is not started
        again, so neither its budget nor its being installed here stands in the way; the verify
        has the job's timeout."""
        missing = self._no_cwd()
        if missing is not None:
            return missing
        log_note("its children are settled: running its verify")
        self.log.note("its engine's work was done in an earlier attempt and its children "
                      "are settled: only its verify runs")
        limit = self.config.timeout_for(self.plan.manifest)
        return self._after_engine(_window(self.started, limit, self.files.mark), "children settled")

    def _no_cwd(self) -> Ending | None:
        """Note who runs the attempt, and where; why it cannot run there (no such cwd)."""
        plan = self.plan
        self.log.note(f"job {plan.job_id} attempt {plan.attempt} by {plan.worker} in {self.cwd}")
        if not self.cwd.is_dir():
            return Ending(Outcome.ENGINE_FAILED, f"cwd {self.cwd} does not exist on this machine")
        return None

    def _after_engine(self, window: Window, said: str) -> Ending:
        """Once the engine's work is done: wait for the job's children, else its verify."""
        waiting = self.children()
        if waiting:
            shown = ", ".join(waiting[:5]) + (" ..." if len(waiting) > 5 else "")
            self.log.note(f"{len(waiting)} of its children are not settled yet ({shown}): "
                          "it waits for them, then its verify runs")
            return Ending(Outcome.AWAITING_CHILDREN,
                          f"{said}; waits for {len(waiting)} child job(s): {shown}", exit_code=0)
        verify = self.plan.manifest.verify
        ending = (self._verify(verify, window) if verify
                  else Ending(Outcome.OK, f"{said}; no verify", exit_code=0))
        if ending.outcome is Outcome.OK and self.reviewer is not None:
            return self.reviewer.judge(ending, self.log, self.cwd)
        return ending

    def _allowance(self) -> Ending | tuple[EngineSpec, Spend, float]:
        """Why the engine may not start (no cwd, a budget used up, no such engine), else the
        engine, what the job has left to spend and the seconds this attempt may run."""
        plan, manifest = self.plan, self.plan.manifest
        missing = self._no_cwd()
        if missing is not None:
            return missing
        budget_left = None
        if manifest.budget and manifest.budget.wall:
            budget_left = manifest.budget.wall - plan.wall_used
            if budget_left <= 0:
                return Ending(Outcome.BUDGET_EXHAUSTED,
                              f"budget.wall of {manifest.budget.wall:.0f}s is used up")
        spent = Spend.of(manifest.budget, plan.usd_used, plan.tokens_used, self.spec)
        if spent.exhausted():
            return Ending(Outcome.BUDGET_EXCEEDED, spent.exhausted() or "")
        limit = self.config.timeout_for(manifest)
        if budget_left is not None:
            limit = min(limit, budget_left)
        if self.spec is None:
            known = ", ".join(sorted(self.config.engines))
            return Ending(Outcome.ENGINE_MISSING, f"engine {self.engine_name!r} is not defined "
                          f"(known: {known}); add it under engines: in aq.yaml")
        return self.spec, spent, limit

    def _launch(self) -> Ending | Launch:
        """What the engine runs with, or why it does not start."""
        allowed = self._allowance()
        if isinstance(allowed, Ending):
            return allowed
        spec, spent, limit = allowed
        plan, manifest, files = self.plan, self.plan.manifest, self.files
        prompt = engine_prompt(plan, spec, self.cwd, self.log, files, self.env)
        if isinstance(prompt, str):
            return Ending(Outcome.ENGINE_FAILED, prompt)
        self.env.update({**spec.env, **(spec.yolo_env if manifest.yolo else {})})
        mcp = _mcp_server(plan, spec, files, self.env, self.log)
        if isinstance(mcp, Ending):
            return mcp
        try:
            argv = spec.argv(prompt=prompt.told, prompt_file=str(files.prompt), yolo=manifest.yolo,
                             session=prompt.session, usd=spent.usd_left,
                             usage_file=str(files.usage), mcp=mcp.values if mcp else None)
        except ArgvError as err:
            return Ending(Outcome.ENGINE_FAILED, str(err))
        if self.stop.is_set():  # the worker was told to stop before this attempt got going
            return Ending(Outcome.INTERRUPTED, "stopped before the engine started")
        program = shutil.which(argv[0], path=self.env.get("PATH"))
        if program is None and not os.path.isfile(argv[0]):
            return Ending(Outcome.ENGINE_MISSING, f"engine {self.engine_name!r} needs {argv[0]!r}, "
                          "which is not installed on this machine")
        return Launch(spec=spec, argv=argv, program=program, text=prompt.text,
                      session=prompt.session, resumed=prompt.resumed, spent=spent,
                      window=_window(self.started, limit, self.files.mark))

    def _run_engine(self, launch: Launch) -> tuple[proc.StreamResult, Meter]:
        """The engine, run to its end; its usage, leftovers and work kept in the log and `engine_run`."""
        spec, log, run = launch.spec, self.log, self.engine_run
        run.version = engine_version(launch.program or launch.argv[0], self.env,
                                     cache=self.files.engine_versions)
        self.scope.start()
        log.note(f"engine {self.engine_name}" + (f" ({run.version})" if run.version else "")
                 + f": {_show_argv(launch.argv, spec)}"
                 + (f" (resuming session {launch.session})" if launch.session else ""))
        if launch.spent.unenforced:
            log.note(launch.spent.unenforced)
        log.start_section()
        reader = reader_for(spec.usage) if spec.usage else None
        meter = Meter(reader, launch.spent, self.config, launch.resumed,
                      live=self.files.live_usage, clock=self.clock)
        ran = proc.run_streaming(launch.argv, cwd=self.cwd, env=self.env, sink=log.write,
                                 deadline=launch.window.deadline, stop=self.stop,
                                 grace=self.config.kill_grace, clock=self.clock,
                                 on_start=self._keep_pgid,
                                 stdin=launch.text.encode() if spec.input == "stdin" else None,
                                 on_stdout=meter.feed if reader else None, limit=meter.over,
                                 mark=launch.window.mark, err_sink=log.stream() if reader else None)
        run.usage = meter.close(self.files.usage)
        run.reported = meter.reported if meter.resumed is not None else None
        run.leftovers = ran.leftovers
        if ran.leftovers:
            log.note(f"the engine left {ran.leftovers} process(es) running; killed")
        if ran.ended not in ("missing", "unstartable"):
            if self.workspace is not None:  # whatever the agent left is work too: commit it, push it
                _keep_work(self.workspace, self.plan, log, run)
            # a job's branch is judged as a whole, against base: what an earlier attempt did and
            # this one undid no longer counts, what it left still does
            against = f"refs/remotes/origin/{self.workspace.base}" if self.workspace else None
            for note in self.scope.check(against):
                log.note(note)
        if run.usage is not None:
            log.note(f"usage: {describe_usage(run.usage)}")
        return ran, meter

    def _keep_pgid(self, pgid: int) -> None:
        _write_text(self.files.pgid, str(pgid))

    def _verify(self, verify: str, window: Window) -> Ending:
        """The job's verify, run where the engine ran, within what is left of its limit."""
        self.log.note(f"verify: {verify}")
        self.log.start_section()
        checked = proc.run_streaming(["bash", "-c", verify], cwd=self.cwd, env=self.env,
                                     sink=self.log.write, deadline=window.deadline, stop=self.stop,
                                     grace=self.config.kill_grace, clock=self.clock,
                                     on_start=self._keep_pgid, mark=window.mark)
        return verify_ending(checked, self.engine_run.usage, limit=window.limit)

    def result(self, ending: Ending) -> AttemptResult:
        """The attempt's result: its tail, artifacts and the outcome noted in its log, closed."""
        log, scrubber, cwd, run = self.log, self.scrubber, self.cwd, self.engine_run
        outcome, detail = ending.outcome, ending.detail
        tail = ""
        if outcome not in (Outcome.OK, Outcome.AWAITING_CHILDREN):  # review_changes: the review
            tail = "\n".join(log.section)[-min(TAIL_CHARS, self.config.log_max // 2):]
            tail = f"{tail}\n[{outcome}: {detail}]".lstrip("\n")
        artifacts = collect_artifacts(self.plan.manifest, cwd, log.note) if cwd.is_dir() else ()
        log.note(f"outcome: {outcome} ({detail})")
        log.close()
        # the scrubber carries a key block over lines: paths, detail, tail, in this order
        outside = tuple(scrubber.line(path) for path in self.scope.outside)
        return AttemptResult(
            outcome=outcome, verified=ending.verified, exit_code=ending.exit_code,
            verify_exit=ending.verify_exit, detail=scrubber.line(detail), tail=scrubber.text(tail),
            log_path=log.path, log_text=log.kept_text(), duration=self.clock() - self.started,
            cwd=cwd if cwd.is_dir() else None, artifacts=artifacts, out_of_scope=outside,
            workspace=self.workspace, head=run.head, pushed=run.pushed,
            scope_against_base=self.scope.against is not None,
            usage=scrubbed(run.usage, scrubber),
            engine=self.engine_name if self.spec and self.sampler is None else None,
            engine_version=run.version, leftovers=run.leftovers,
            session_usage=scrubbed(run.reported, scrubber), adopted=self.adopted)


def _open_workspace(plan: AttemptPlan, config: QueueConfig, log: AttemptLog) -> Workspace | None:
    """The job's worktree, for a job with a repo on a worker that works on repos."""
    manifest = plan.manifest
    repo = config.repo_for(manifest)
    if not repo or plan.workspaces is None:
        return None
    workspace = open_workspace(resolve_repo(repo, plan.queue_root), plan.job_id, plan.attempt,
                               root=plan.workspaces, base=config.base_for(manifest),
                               # a verify-only attempt judges the work the engine pushed
                               from_base=manifest.retry_from == "base" and not plan.verify_only)
    log.note(f"workspace: {workspace.path} on {workspace.branch} from {workspace.start[:12]}")
    return workspace


def _cwd(plan: AttemptPlan, workspace: Workspace | None) -> Path:
    """The job's cwd: in its worktree when it has one."""
    manifest = plan.manifest
    if workspace is None:
        return resolve_cwd(manifest, plan.queue_root)
    sub = Path(os.path.expanduser(manifest.cwd)) if manifest.cwd else None
    return workspace.path / sub if sub is not None and not sub.is_absolute() else workspace.path


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


def _mcp_server(plan: AttemptPlan, spec: EngineSpec, files: RunFiles, env: dict[str, str],
                log: AttemptLog) -> mcpconfig.McpGiven | Ending | None:
    """aq's MCP server for a job with `mcp: true` (its variables added to `env`): the engine
    takes it, or never starts (an ending naming the engine)."""
    if not plan.manifest.mcp or plan.verify_only:
        return None
    try:
        mcp = mcpconfig.give(spec, files.mcp_config, plan.queue_root, env)
    except mcpconfig.McpRefused as err:
        return Ending(Outcome.ENGINE_MISSING, str(err))
    env.update(mcp.env)
    log.note(mcp.note)
    return mcp


def _keep_work(workspace: Workspace, plan: AttemptPlan, log: AttemptLog, run: EngineRun) -> None:
    """Commit what the engine left uncommitted in the job's worktree and push the job's branch,
    so the work never exists on this machine alone; `run` gets the head and whether it was
    pushed. A push that fails is tried again by the worker before it records the result."""
    try:
        made = commit_leftovers(workspace, f"aq: {plan.job_id} attempt {plan.attempt}: work the "
                                f"agent left uncommitted", identity_args(workspace.path))
        if made:
            log.note(f"workspace: committed what the agent left uncommitted ({made[:12]})")
        run.head = git(workspace.path, "rev-parse", "HEAD").stdout.strip()
        run.pushed = push_branch(workspace)
        log.note(f"workspace: {workspace.branch} at {run.head[:12]} "
                 + ("pushed" if run.pushed else "NOT pushed yet (tried again before the move)"))
    except AqError as err:
        log.note(f"workspace: {err}")


def _show_argv(argv: list[str], spec: EngineSpec) -> str:
    """The command line for the log, with the (long) prompt shown as a placeholder."""
    shown = []
    for part in argv:
        shown.append("<prompt>" if len(part) > 80 and spec.input == "prompt" else part)
    return " ".join(shown)


def _window(started: float, limit: float, mark_file: Path) -> Window:
    """`limit` seconds from `started` for the attempt's processes, and the mark each carries,
    kept in `mark_file` for the tool kill."""
    window = Window(limit=limit, deadline=started + limit, mark=new_mark())
    _write_text(mark_file, window.mark)
    return window


def _write_text(path: Path, text: str) -> None:
    """A note for a worker that finds this attempt's leftovers after a crash: worth trying,
    never worth failing the attempt for."""
    with contextlib.suppress(OSError):
        path.write_text(text, encoding="utf-8")


def crashed_attempt(plan: AttemptPlan, err: BaseException) -> AttemptResult:
    """The result of an attempt that raised instead of returning: an engine failure, kept."""
    detail = f"aq could not run the attempt: {type(err).__name__}: {err}"
    return AttemptResult(
        outcome=Outcome.ENGINE_FAILED, verified=None, exit_code=None, verify_exit=None,
        detail=detail, tail=detail, log_path=RunFiles(plan.run_dir, plan.attempt).log,
        log_text=f"[aq] {detail}\n", duration=0.0, cwd=None)
