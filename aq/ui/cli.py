"""The command line: parse, call one use-case in `aq.usecases`, render. Nothing else lives here.

`main` is the one exit boundary: an `AqError` becomes one line on stderr and its exit code.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from aq.errors import AqError, ExitStatus, UsageError
from aq.infra.clock import utc_now as now

if TYPE_CHECKING:
    from collections.abc import Callable

    from aq.core.manifest import Budget
    from aq.core.scheduler import Verdict
    from aq.store.queue import Queue
    from aq.store.snapshot import Job
    from aq.usecases.jobs import JobDetail
    from aq.usecases.listing import Listing, NextResult
    from aq.usecases.tracker_import import Imported

app = typer.Typer(
    name="aq",
    help="aq: a job queue for coding agents. The queue is a git repository; a job is a Markdown "
         "file; its stage is the folder it sits in.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

QueueOpt = Annotated[str | None, typer.Option("--queue", "-q", help="Queue folder (default: "
                     "walk up from here to the first folder holding queue/inbox; or AQ_QUEUE).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts and agents.")]


_LOCATED: list[Queue] = []  # what this process worked on: its notices are said at the end


def _queue(path: str | None) -> Queue:
    from aq.store.queue import Queue

    queue = Queue.locate(path)
    _LOCATED.append(queue)
    return queue


FETCH_WAIT = 30.0  # seconds a person's command waits for the queue lock to fetch first
STALE_VIEW = 60.0  # a listing older than this says how old it is


def _fetched(q: Queue) -> None:
    """Before acting on a job: bring this clone up to the remote, so that a job that is there
    is found and a move is judged on the fleet's state."""
    if q.remote is None:
        return
    # a remote that does not answer is said by the move itself, which then changes nothing
    with contextlib.suppress(AqError):
        q.refresh_from_remote(FETCH_WAIT)


def _fetch_age(q: Queue) -> float | None:
    """Seconds since this clone last fetched: git's FETCH_HEAD, else (a clone that never
    fetched after `git clone`) when its remote refs were written; None: unknown."""
    for name in ("FETCH_HEAD", "packed-refs"):
        try:
            return time.time() - (q.git_dir / name).stat().st_mtime if q.git_dir else None
        except OSError:
            continue
    return None


def _fetched_text(age: float | None) -> str:
    from aq.core.durations import format_duration

    return "never fetched" if age is None else f"last fetched {format_duration(age)} ago"


def _say_view_age(q: Queue) -> None:
    """A listing in a clone of a fleet's queue says how old its view of the remote is."""
    if q.remote is None:
        return
    age = _fetch_age(q)
    if age is None or age > STALE_VIEW:
        print(f"aq: this clone was {_fetched_text(age)} from {q.remote.name!r}; --fetch looks at "
              "the remote now", file=sys.stderr)


def _say_notices() -> None:
    for queue in _LOCATED:
        for notice in queue.take_notices():
            print(f"aq: {notice}", file=sys.stderr)


def _emit(data: Any) -> None:
    """JSON on stdout: indented for a person at a terminal, compact (and faster) for a program."""
    indent = 2 if sys.stdout.isatty() else None
    sys.stdout.write(json.dumps(data, indent=indent, default=str, ensure_ascii=False) + "\n")


def _caps(queue: Queue, tags: list[str] | None = None) -> Callable[[frozenset[str]], frozenset[str]]:
    """This machine's capabilities, probed when a command needs them: with the versions of only
    the tools some job compares (`node>=20`), since asking every tool takes a few hundred ms."""
    from aq.infra.probe import probe

    return lambda compared: probe(queue.config.engines, tags or (), versions=compared)


def _all_caps(queue: Queue, tags: list[str] | None = None) -> frozenset[str]:
    from aq.infra.probe import probe

    return probe(queue.config.engines, tags or ())


# --- init / add ------------------------------------------------------------------------------

@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Where to make the queue.")] = Path("."),
) -> None:
    """Make a queue: stage folders, aq.yaml, .gitattributes, and a git repo if there is none."""
    from aq.usecases.setup import init_queue

    result = init_queue(directory)
    if not result.created:
        print(f"{result.root} is already an aq queue; nothing changed")
        return
    made = ", ".join(result.created)
    print(f"made a queue in {result.root}: {made}" + (" (new git repo)" if result.git_initialized else ""))
    print("next: aq add --title 'Say hello' --engine shell --body 'echo hello'; then aq run --drain")


@app.command()
def add(
    file: Annotated[str | None, typer.Argument(help="Markdown file with the job body (and "
                    "frontmatter), or '-' for stdin.")] = None,
    body: Annotated[str | None, typer.Option("--body", "-b", help="The job body as text.")] = None,
    title: Annotated[str | None, typer.Option("--title", "-t")] = None,
    job_id: Annotated[str | None, typer.Option("--id", help="Use this id (refused if taken).")] = None,
    priority: Annotated[str | None, typer.Option("--priority", "-p",
                        help="critical, high, medium or low.")] = None,
    deps: Annotated[str | None, typer.Option("--deps", help="Comma-separated job ids.")] = None,
    verify: Annotated[str | None, typer.Option("--verify", help="Shell command; exit 0 = pass.")] = None,
    engine: Annotated[str | None, typer.Option("--engine", "-e")] = None,
    profile: Annotated[str | None, typer.Option("--profile")] = None,
    lock: Annotated[str | None, typer.Option("--lock")] = None,
    timeout: Annotated[str | None, typer.Option("--timeout", help="e.g. 45m, 2h.")] = None,
    retry_max: Annotated[int | None, typer.Option("--retry-max", min=0)] = None,
    retry_backoff: Annotated[str | None, typer.Option(
        "--retry-backoff", help="Wait before the first retry, doubling after each (e.g. 30s, 5m).")] = None,
    key: Annotated[str | None, typer.Option("--key", help="Idempotency key.")] = None,
    cwd: Annotated[str | None, typer.Option("--cwd", help="Where the engine and verify run.")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Add it even if its engine or profile does not exist (yet).")] = False,
    queue: QueueOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a job to the inbox and print its id."""
    import secrets

    from aq.core.manifest import split_frontmatter
    from aq.errors import ManifestError
    from aq.usecases.jobs import add_job
    from aq.usecases.setup import who_am_i

    q = _queue(queue)
    text = _read_body(file, body)
    source = "the job body" if file is None else "stdin" if file == "-" else file
    # what the file says is content (refused: exit 1); what a flag says is the command line (2)
    front, text_body = split_frontmatter(text, source)
    fields: dict[str, Any] = dict(front)
    options = {"title": title, "priority": priority, "deps": deps, "verify": verify,
               "engine": engine, "profile": profile, "lock": lock, "timeout": timeout,
               "idempotency-key": key, "cwd": cwd}
    flags = {k for k, v in options.items() if v is not None}
    fields.update({k: v for k, v in options.items() if v is not None})
    for key, value in (("max", retry_max), ("backoff", retry_backoff)):
        if value is not None:
            retry = dict(fields.get("retry") or {}) if isinstance(fields.get("retry"), dict) else {}
            fields["retry"] = {**retry, key: value}
    if retry_max is not None or retry_backoff is not None:
        flags.add("retry")
    if deps is not None:
        fields["deps"] = [d.strip() for d in deps.split(",") if d.strip()]
        if not fields["deps"]:
            raise UsageError(f"--deps {deps!r} names no job: give job ids separated by commas")
    if job_id is not None and not job_id.strip():
        raise UsageError("--id is empty: give a job id, or leave --id out to make one from the title")
    try:
        if not force:
            _check_names(q, fields, source)
        result = add_job(q, text_body, fields, job_id=job_id, now=now(), who=who_am_i(),
                         entropy=secrets.randbits(30), source=source)
    except ManifestError as err:
        if err.key in flags:
            flag = {"idempotency-key": "key", "retry": "retry-max/--retry-backoff"}.get(err.key, err.key)
            raise UsageError(f"--{flag}: {err.problem}") from None
        raise
    if as_json:
        _emit({**_job_json(result.job), "created": result.created})
    elif result.created:
        print(result.job.id)
    else:
        print(result.job.id)
        print(f"aq: {result.message}", file=sys.stderr)


def _job_text(data: bytes, source: str) -> str:
    """A job file's text: UTF-8 Markdown, refused in one line when it is not."""
    from aq.errors import ManifestError

    if b"\0" in data:
        raise ManifestError(source, "looks binary (it holds NUL bytes): a job is a Markdown text file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ManifestError(source, f"is not UTF-8 text (byte 0x{data[err.start]:02x} at offset "
                            f"{err.start}): save it as UTF-8") from None


def _check_names(q: Queue, fields: dict[str, Any], source: str) -> None:
    """An engine or profile that does not exist would only fail at run time: refuse it now."""
    from aq.errors import ManifestError

    engine, profile = fields.get("engine"), fields.get("profile")
    if isinstance(engine, str) and engine not in q.config.engines:
        known = ", ".join(sorted(q.config.engines))
        raise ManifestError(source, f"engine {engine!r} is not defined (known: {known}): add it "
                            "under engines: in aq.yaml, or add with --force", "engine")
    if isinstance(profile, str) and profile not in q.profiles().found:
        known = ", ".join(sorted(q.profiles().found)) or "none"
        raise ManifestError(source, f"profile {profile!r} does not exist (known: {known}): add "
                            f"profiles/{profile}.md, or add with --force", "profile")


def _read_body(file: str | None, body: str | None) -> str:
    if body is not None and file is not None:
        raise UsageError("give the body either as FILE or as --body, not both")
    if body is not None:
        return body
    if file == "-":
        return _job_text(sys.stdin.buffer.read(), "stdin")
    if file is not None:
        try:
            data = Path(file).read_bytes()
        except OSError as err:
            raise UsageError(f"cannot read {file}: {err.strerror}") from None
        return _job_text(data, file)
    raise UsageError("no job body: give a FILE, '-' for stdin, or --body TEXT")


# --- reading ---------------------------------------------------------------------------------

@app.command("ls")
def ls_(
    stage: Annotated[list[str] | None, typer.Option("--stage", "-s", help="Only this stage "
                     "(repeatable): inbox building review testing shipped failed dead_letter.")] = None,
    ready: Annotated[bool, typer.Option("--ready", help="Only inbox jobs a worker here could take now.")] = False,
    blocked: Annotated[bool, typer.Option("--blocked", help="Only inbox jobs that wait, with why.")] = False,
    fetch: Annotated[bool, typer.Option("--fetch", help="Fetch from the queue's remote first.")] = False,
    queue: QueueOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List jobs by stage, with the reason an inbox job waits."""
    from aq.core.lifecycle import Stage
    from aq.usecases.listing import list_jobs

    q = _queue(queue)
    if fetch:
        _fetched(q)
    else:
        _say_view_age(q)
    stages = []
    for name in stage or []:
        try:
            stages.append(Stage(name))
        except ValueError:
            raise UsageError(f"--stage {name!r} is not a stage: {', '.join(Stage)}") from None
    listing = list_jobs(q, now=now(), capabilities=_caps(q), stages=stages, ready=ready, blocked=blocked)
    if as_json:
        _emit([_job_json(job, listing.verdicts.get(job.id)) for job in listing.jobs])
        return
    _print_listing(listing)


def _print_listing(listing: Listing) -> None:
    for problem in listing.problems:
        print(f"aq: {problem}", file=sys.stderr)
    if not listing.jobs:
        print("no jobs")
        return
    width = max(len(job.id) for job in listing.jobs)
    current = None
    for job in listing.jobs:
        if job.stage != current:
            current = job.stage
            print(f"{job.stage}:")
        verdict = listing.verdicts.get(job.id)
        title = job.manifest.title if job.manifest else "(invalid)"
        prio = job.manifest.priority if job.manifest else "-"
        note = ""
        if verdict is not None:
            note = "  [ready]" if verdict.ready else f"  [{verdict.reason}]"
        elif job.state.holder:
            note = f"  [{job.state.holder}, attempt {job.state.attempt_count}]"
        print(f"  {job.id:<{width}}  {prio:<8}  {_cut(title, 60)}{note}")


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


@app.command()
def show(
    job: Annotated[str, typer.Argument(help="Job id or a unique prefix of one.")],
    queue: QueueOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a job: manifest, resolved settings, stage, attempts, events, why it waits."""
    from aq.usecases.jobs import show_job

    q = _queue(queue)
    detail = show_job(q, job, now=now(), capabilities=_caps(q))
    if as_json:
        _emit(_detail_json(detail))
        return
    _print_detail(detail, frozenset(name for name, spec in q.config.engines.items() if spec.usage))


def _print_detail(detail: JobDetail, metered: frozenset[str] = frozenset()) -> None:
    """`metered`: the engines whose usage aq reads (an attempt of one that said nothing says so)."""
    from aq.core.usage import Usage
    from aq.usecases.spend import describe_usage

    job = detail.job
    print(f"{job.id}: {job.manifest.title if job.manifest else '(invalid manifest)'}")
    print(f"  stage:    {job.stage}")
    if job.error:
        print(f"  error:    {job.error}")
    if detail.verdict is not None:
        print(f"  pick:     {'ready' if detail.verdict.ready else detail.verdict.reason}")
    if job.state.holder:
        print(f"  held by:  {job.state.holder} (lease {job.state.token})")
    if job.state.branch:
        pushed = "pushed" if job.state.branch_pushed else "NOT pushed"
        print(f"  branch:   {job.state.branch} at {(job.state.branch_head or '?')[:12]} ({pushed}; "
              f"aq diff {job.id})")
    if job.state.out_of_scope:
        outside = job.state.out_of_scope
        print(f"  WARNING:  the last attempt changed {len(outside)} file(s) outside allowed-scope: "
              f"{', '.join(outside[:10])}{' …' if len(outside) > 10 else ''}")
    print(f"  moves:    {', '.join(detail.allowed) or 'none'}")
    if job.manifest is not None and job.manifest.tracker_item:
        owed = detail.tracker_owed
        owing = (f", {len(owed)} owed (sent by {owed[0][0]}, or anyone after trackers.takeover; "
                 "aq to-tracker)") if owed else ""
        print(f"  tracker:  {job.manifest.tracker_item}: {detail.tracker_sent} post(s) sent{owing}")
    if job.manifest is not None:
        m = job.manifest
        if m.deps:
            print(f"  deps:     {', '.join(m.deps)}")
        for name, item in detail.resolved.items():
            if item.value not in (None, False, (), []):
                print(f"  {name + ':':<15}{_fmt(item.value)}  ({item.source})")
    budget = job.manifest.budget if job.manifest else None
    if job.state.usd_used or job.state.tokens_used or (budget and (budget.usd or budget.tokens)):
        print(f"  spent:    {_spent(job.state.usd_used, job.state.tokens_used, budget)}")
    if job.state.attempts:
        print("attempts:")
        for a in job.state.attempts:
            verify = "" if a.verify_exit is None else f", verify exit {a.verify_exit}"
            print(f"  #{a.number} {a.worker} {a.started}  {a.outcome or 'running'}{verify}"
                  + (f"  log {a.log}" if a.log else ""))
            usage = Usage.from_event(a.usage) if a.usage else None
            if usage is not None or a.engine in metered:
                print(f"      {a.engine or 'engine'}: "
                      + (describe_usage(usage) if usage is not None else "usage not reported"))
            for artifact in a.artifacts:
                print(f"      artifact {artifact}")
    print("events:")
    for event in detail.events:
        move = f" {event.get('from', '')}->{event['to']}" if event.get("to") else ""
        why = f": {event['why']}" if event.get("why") else ""
        print(f"  {event.get('ts', '?')}  {event.get('type')}{move} by {event.get('by', '?')}{why}")
        if event.get("log_not_kept"):
            print(f"      log not kept: {event['log_not_kept']}")


def _spent(usd: float, tokens: int, budget: Budget | None) -> str:
    """`$0.42 of $5.00, 12,000 tokens of 2,000,000` (what the attempts since added/requeued used)."""
    cost = f"${usd:.4f}" + (f" of ${budget.usd:.2f}" if budget and budget.usd is not None else "")
    count = f"{tokens:,} tokens" + (f" of {budget.tokens:,}" if budget and budget.tokens else "")
    return f"{cost}, {count}"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        from aq.core.durations import format_duration

        return format_duration(value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


@app.command("next")
def next_(
    explain: Annotated[bool, typer.Option("--explain", help="Say why every other job was passed over.")] = False,
    cap: Annotated[list[str] | None, typer.Option("--cap", help="Extra capability tag (repeatable).")] = None,
    queue: QueueOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """What `aq run` would take next here, and (with --explain) why."""
    from aq.usecases.listing import next_job

    q = _queue(queue)
    result = next_job(q, now=now(), capabilities=_caps(q, cap))
    if as_json:
        _emit(_next_json(result))
        return
    _print_next(result, explain)


def _print_next(result: NextResult, explain: bool) -> None:
    if result.chosen is None:
        why = (f": queue halted: {result.halted}" if result.halted
               else "" if result.verdicts else ": the inbox is empty")
        print(f"nothing to take{why}")
    else:
        m = result.chosen.manifest
        assert m is not None
        print(f"{result.chosen.id}  ({m.priority}) {m.title}")
    if explain:
        for verdict in result.verdicts:
            if result.chosen is not None and verdict.job.id == result.chosen.id:
                print(f"  take  {verdict.job.id}: first in order (priority, age, id)")
            elif verdict.ready:
                print(f"  later {verdict.job.id}: ready, but after {result.chosen.id if result.chosen else '?'} in order")
            else:
                print(f"  skip  {verdict.job.id}: {verdict.reason}")


@app.command()
def lint(queue: QueueOpt = None, as_json: JsonOpt = False) -> None:
    """Check every manifest, dependency and event log; exit 1 listing every problem."""
    from aq.usecases.checks import lint as run_lint

    result = run_lint(_queue(queue))
    if as_json:
        _emit({"jobs": result.jobs, "problems": list(result.problems), "ok": not result.problems})
    else:
        for problem in result.problems:
            print(problem)
        print(f"{result.jobs} jobs, {len(result.problems)} problem(s)", file=sys.stderr)
    if result.problems:
        raise typer.Exit(int(ExitStatus.REFUSED))


# --- running ---------------------------------------------------------------------------------

@app.command()
def run(
    once: Annotated[bool, typer.Option("--once", help="Run one job, then exit.")] = False,
    drain: Annotated[bool, typer.Option("--drain", help="Run until nothing it could take is left.")] = False,
    poll: Annotated[str | None, typer.Option("--poll", help="Idle wait between looks, e.g. 5s.")] = None,
    max_jobs: Annotated[int, typer.Option("--max", "-j", min=1, help="Jobs at once.")] = 1,
    worker: Annotated[str | None, typer.Option("--worker", "-w", help="Worker name (default host-pid).")] = None,
    cap: Annotated[list[str] | None, typer.Option("--cap", help="Extra capability tag (repeatable).")] = None,
    offline: Annotated[bool, typer.Option("--offline", help="Claim even while the remote is "
                       "unreachable; reconcile when it answers.")] = False,
    lease_ttl: Annotated[str | None, typer.Option("--lease-ttl", help="Lease TTL (default aq.yaml, 10m).")] = None,
    heartbeat: Annotated[str | None, typer.Option("--heartbeat", help="Heartbeat interval "
                         "(default a quarter of the TTL).")] = None,
    queue: QueueOpt = None,
) -> None:
    """Work the queue: claim, run the engine, verify, move. Forever unless --once or --drain."""
    from aq.core.durations import parse_duration
    from aq.worker.runner import Worker

    if once and drain:
        raise UsageError("--once and --drain do not go together: choose one")
    def seconds(flag: str, value: str | None) -> float | None:
        if value is None:
            return None
        try:
            parsed = parse_duration(value)
        except ValueError as err:
            raise UsageError(f"{flag}: {err}") from None
        if parsed <= 0:
            raise UsageError(f"{flag}: must be more than 0")
        return parsed

    poll_s = seconds("--poll", poll)
    ttl_s, beat_s = seconds("--lease-ttl", lease_ttl), seconds("--heartbeat", heartbeat)
    q = _queue(queue)
    q.config  # noqa: B018 - a broken aq.yaml stops here, before any claim
    mode = "once" if once else "drain" if drain else "forever"
    if worker is not None and (not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", worker)
                               or ".." in worker or worker.endswith((".", ".lock"))):
        raise UsageError(f"--worker {worker!r}: use letters, digits, '.', '_' and '-' (it names a git ref)")
    result = Worker(q, worker_id=worker, max_jobs=max_jobs, poll=poll_s, mode=mode,
                    capabilities=_all_caps(q, cap), offline=offline, lease_ttl=ttl_s,
                    heartbeat=beat_s).run()
    print(f"{result.claimed} claimed, {len(result.finished)} finished, {len(result.stale)} stale",
          file=sys.stderr)


@app.command()
def logs(
    job: Annotated[str, typer.Argument(help="Job id or a unique prefix of one.")],
    attempt: Annotated[int | None, typer.Option("--attempt", "-n", min=1, help="Attempt number (default: the latest).")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing while the attempt runs.")] = False,
    queue: QueueOpt = None,
) -> None:
    """Print an attempt's log (scrubbed of secrets)."""
    from aq.usecases.logs import find_log, read_log

    q = _queue(queue)
    for chunk in read_log(q, find_log(q, job, attempt), follow=follow):
        sys.stdout.write(chunk.decode("utf-8", errors="replace"))
        sys.stdout.flush()


# --- human moves -----------------------------------------------------------------------------

def _move(ref: str, action: str, queue: str | None, reason: str | None, as_json: bool,
          allow_out_of_scope: bool = False) -> None:
    from aq.core.lifecycle import Action
    from aq.usecases.moves import MoveResult, move_job
    from aq.usecases.setup import who_am_i

    def announce(moved: MoveResult) -> None:
        if not as_json:  # said before the tracker is: the move stands whatever it answers
            print(f"{moved.job_id}: {moved.source} -> {moved.target}", flush=True)

    q = _queue(queue)
    _fetched(q)
    result = move_job(q, ref, Action(action), who=who_am_i(), now=now(), env=os.environ,
                      reason=reason, allow_out_of_scope=allow_out_of_scope, announce=announce)
    if as_json:
        _emit({"id": result.job_id, "from": result.source, "to": result.target, "action": result.action,
               "tracker": [_sent_json(s) for s in result.tracker]})
    for item in result.tracker:
        if not item.ok:
            owed = "" if "not recorded" in item.message else \
                f"; it stays owed: 'aq to-tracker {result.job_id}' sends it"
            print(f"aq: {item.message}{owed}", file=sys.stderr)


JobArg = Annotated[str, typer.Argument(help="Job id or a unique prefix of one.")]


@app.command()
def promote(job: JobArg, queue: QueueOpt = None, as_json: JsonOpt = False) -> None:
    """Move a reviewed job on to testing (review -> testing)."""
    _move(job, "promote", queue, None, as_json)


@app.command()
def ship(
    job: JobArg,
    allow_out_of_scope: Annotated[bool, typer.Option(
        "--allow-out-of-scope", help="Ship although the job changed files outside its "
        "allowed-scope (recorded with your name).")] = False,
    queue: QueueOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The human gate: review or testing -> shipped."""
    _move(job, "ship", queue, None, as_json, allow_out_of_scope)


@app.command()
def reject(
    job: JobArg,
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why (kept in the event log).")],
    queue: QueueOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Send a job in review or testing to failed, saying why."""
    _move(job, "reject", queue, reason, as_json)


@app.command()
def requeue(job: JobArg, queue: QueueOpt = None, as_json: JsonOpt = False) -> None:
    """Put a failed or dead-lettered job back in the inbox (its attempts stay in the log)."""
    _move(job, "requeue", queue, None, as_json)


@app.command()
def cancel(
    job: JobArg,
    reason: Annotated[str | None, typer.Option("--reason", "-r")] = None,
    queue: QueueOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Stop an unfinished job (a running attempt here is stopped) and move it to failed."""
    _move(job, "cancel", queue, f"canceled: {reason}" if reason else "canceled", as_json)


# --- trackers ----------------------------------------------------------------------------------

@app.command("from-tracker")
def from_tracker(
    items: Annotated[list[str] | None, typer.Argument(
        help="Tracker items: github:OWNER/REPO#N, backlog:TASK-N, cmd:NAME:ID.", show_default=False)] = None,
    query: Annotated[str | None, typer.Option("--query", help="Import every item a query returns: "
                     "github:OWNER/REPO [search words] (open issues with the label), backlog[:WORDS] "
                     "(its To Do tasks), cmd:NAME[:QUERY].")] = None,
    label: Annotated[str | None, typer.Option("--label", help="The label a query looks for "
                     "(default: aq.yaml's, else agent:run for GitHub).")] = None,
    new: Annotated[bool, typer.Option("--new", help="Make a new job even if the item made one "
                   "before (linked to the same item).")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="Keep importing, every --every, until "
                     "interrupted.")] = False,
    every: Annotated[str, typer.Option("--every", help="How often --watch looks (e.g. 60s, 5m).")] = "60s",
    queue: QueueOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Import tracker items as jobs; importing one again changes nothing, or updates its job
    while it waits in the inbox."""
    import secrets

    from aq.core.durations import parse_duration
    from aq.usecases.setup import who_am_i
    from aq.usecases.tracker_import import import_named, watch_imports

    if not items and not query:
        raise UsageError("name tracker items (github:OWNER/REPO#N, backlog:TASK-N, cmd:NAME:ID) "
                         "or give --query")
    try:
        interval = parse_duration(every)
    except ValueError as err:
        raise UsageError(f"--every: {err}") from None
    q, who = _queue(queue), who_am_i()

    def entropy() -> int:
        return secrets.randbits(30)

    if watch:
        try:  # each look says only its news
            for news in watch_imports(q, items or [], query, label=label, every=interval,
                                      clock=now, who=who, entropy=entropy, new=new, env=os.environ):
                if news or not as_json:
                    _print_imported(news, as_json)
                _say_notices()
        except KeyboardInterrupt:
            pass  # Ctrl-C ends a watch; an import it cut short was rolled back
        return
    results = import_named(q, items or [], query, label=label, now=now(), who=who,
                           entropy=entropy, new=new, env=os.environ)
    _print_imported(results, as_json)
    if query and not results and not as_json:
        print(f"{query}: no items")
    if any(r.failed for r in results):
        raise SystemExit(int(ExitStatus.REFUSED))


def _print_imported(results: list[Imported], as_json: bool) -> None:
    if as_json:
        _emit([{"ref": r.ref, "outcome": r.outcome, "job": r.job_id, "stage": r.stage,
                "message": r.message} for r in results])
        return
    for r in results:
        print(r.message if not r.failed else f"aq: {r.message}",
              file=sys.stderr if r.failed else sys.stdout, flush=True)


@app.command("to-tracker")
def to_tracker(
    jobs: Annotated[list[str] | None, typer.Argument(help="Jobs (ids or unique prefixes).",
                                                     show_default=False)] = None,
    all_jobs: Annotated[bool, typer.Option("--all", help="Every job linked to a tracker item.")] = False,
    queue: QueueOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Send tracker posts still owed: each move of a linked job owes its item one comment (and
    a status), sent once."""
    from aq.usecases.setup import who_am_i
    from aq.usecases.tracker_delivery import to_tracker as send_owed

    if not jobs and not all_jobs:
        raise UsageError("name jobs, or give --all")
    if jobs and all_jobs:
        raise UsageError("name jobs or give --all, not both")
    q = _queue(queue)
    report = send_owed(q, None if all_jobs else jobs, me=who_am_i(), now=now(), env=os.environ)
    if as_json:
        _emit({"sent": [_sent_json(s) for s in report.sent],
               "waiting": [{"job": w.job_id, "ref": w.ref, "owner": w.owner, "since": w.since}
                           for w in report.waiting]})
    else:
        for item in report.sent:
            print(item.message if item.ok else f"aq: {item.message}; still owed",
                  file=sys.stdout if item.ok else sys.stderr)
        for wait in report.waiting:
            print(f"{wait.job_id}: a post to {wait.ref} is {wait.owner}'s to send (moved at "
                  f"{wait.since}); anyone sends it after trackers.takeover")
        if not report.sent and not report.waiting:
            print("nothing owed to trackers")
    if any(not item.ok for item in report.sent):
        raise SystemExit(int(ExitStatus.REFUSED))


def _sent_json(item: Any) -> dict[str, Any]:
    return {"job": item.job_id, "ref": item.ref, "ok": item.ok, "message": item.message,
            "url": item.url}


@app.command()
def halt(
    reason: Annotated[str, typer.Option("--reason", "-r", help="Shown to everyone who looks.")] = "halted",
    queue: QueueOpt = None,
) -> None:
    """Kill switch: no worker claims anything until 'aq resume'; running jobs finish."""
    from aq.usecases.fleet import halt as do_halt
    from aq.usecases.setup import who_am_i

    changed = do_halt(_queue(queue), reason=reason, who=who_am_i(), now=now())
    print("halted: no worker will claim a job" if changed else "already halted")


@app.command()
def resume(queue: QueueOpt = None) -> None:
    """Lift a halt: workers claim again."""
    from aq.usecases.fleet import resume as do_resume
    from aq.usecases.setup import who_am_i

    changed = do_resume(_queue(queue), who=who_am_i())
    print("resumed: workers claim again" if changed else "not halted")


@app.command()
def profiles(
    action: Annotated[str | None, typer.Argument(help="'show' to print one profile.")] = None,
    name: Annotated[str | None, typer.Argument(help="The profile to show.")] = None,
    queue: QueueOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the queue's profiles (profiles/*.md), or `aq profiles show NAME` for one."""
    from aq.usecases.profiles import get_profile, list_profiles

    q = _queue(queue)
    if action is None:
        listing = list_profiles(q)
        if as_json:
            _emit({"profiles": [_profile_json(p) | {"jobs": listing.jobs.get(p.name, 0)}
                                for p in listing.profiles], "problems": list(listing.problems)})
            return
        if not listing.profiles:
            print("no profiles: add profiles/<name>.md (aq init copies a starter catalog)")
        for p in listing.profiles:
            engine = p.engine or (f"class {p.engine_class}" if p.engine_class else "queue default")
            used = listing.jobs.get(p.name, 0)
            print(f"{p.name:<20} v{p.version:<4} {engine:<22} {', '.join(p.capabilities) or '-':<24} "
                  f"{used} job(s)")
        for problem in listing.problems:
            print(f"problem: {problem}", file=sys.stderr)
        return
    if action != "show" or not name:
        raise UsageError("usage: aq profiles [--json] | aq profiles show NAME [--json]")
    profile = get_profile(q, name)
    if as_json:
        _emit(_profile_json(profile) | {"persona": profile.persona})
        return
    print(f"{profile.name} (version {profile.version}, hash {profile.content_hash})")
    for key, value in _profile_json(profile).items():
        if key not in ("name", "version", "hash") and value not in (None, [], False):
            print(f"  {key + ':':<16}{_fmt(value)}")
    print()
    print(profile.persona)


def _profile_json(p: Any) -> dict[str, Any]:
    return {"name": p.name, "version": p.version, "hash": p.content_hash,
            "capabilities": list(p.capabilities), "default-verify": p.verify, "engine": p.engine,
            "engine-class": p.engine_class, "prefers-engine": list(p.prefers_engine),
            "allowed-scope": None if p.allowed_scope is None else list(p.allowed_scope),
            "review-policy": p.review_policy, "timeout": p.timeout, "allow-yolo": p.allow_yolo}


@app.command()
def diff(job: Annotated[str, typer.Argument(help="Job id or a unique prefix of one.")],
         queue: QueueOpt = None, as_json: JsonOpt = False) -> None:
    """What a job with a repo changed: its branch aq/<job> against its base, from the remote."""
    from aq.usecases.ship import job_diff

    result = job_diff(_queue(queue), job)
    if as_json:
        _emit({"id": result.job_id, "branch": result.branch, "base": result.base,
               "patch": result.patch})
        return
    sys.stdout.write(result.patch or f"{result.branch} makes no change against {result.base}\n")


@app.command()
def gc(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would be freed.")] = False,
    older_than: Annotated[str, typer.Option("--older-than", help="Unused (or shipped) for longer "
                          "than this: 14d, 36h.")] = "14d",
    branches: Annotated[bool, typer.Option("--branches", help="Also delete the aq/<job> branches "
                        "of jobs shipped longer ago, on the repos' remotes.")] = False,
    queue: QueueOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Free disk: unused repo caches, old jobs' logs (aq.yaml log_retention), old branches."""
    from aq.core.durations import parse_duration
    from aq.usecases.gc import gc as run_gc

    try:
        age = parse_duration(older_than)
    except ValueError as err:
        raise UsageError(f"--older-than {older_than!r}: {err}") from None
    freed = run_gc(_queue(queue), now=now(), older_than=age, branches=branches, dry_run=dry_run)
    if as_json:
        _emit({"dry_run": dry_run, "freed": [{"kind": f.kind, "what": f.what, "bytes": f.bytes}
                                              for f in freed]})
        return
    verb = "would free" if dry_run else "freed"
    for f in freed:
        print(f"{verb} {f.kind:<7} {f.what}  ({f.bytes / 1048576:.1f} MiB)")
    total = sum(f.bytes for f in freed)
    print(f"{verb} {len(freed)} item(s), {total / 1048576:.1f} MiB" if freed else "nothing to free")


@app.command()
def board(
    once: Annotated[bool, typer.Option("--once", help="Print one snapshot and exit.")] = False,
    every: Annotated[float, typer.Option("--every", help="Seconds between refreshes.")] = 3.0,
    cards: Annotated[int | None, typer.Option("--cards", help="Cards shown per stage "
                     "(default: what fits the terminal).")] = None,
    queue: QueueOpt = None,
) -> None:
    """A kanban of the queue: a column per stage, a card per job; live until Ctrl-C."""
    import shutil
    import time

    from aq.ui.board import board_data, board_text, render_board

    q = _queue(queue)
    size = shutil.get_terminal_size((100, 40))
    if once:
        data = board_data(q, now=now(), monotonic=time.monotonic(), fetch=q.remote is not None,
                          capabilities=_caps(q))
        sys.stdout.write(board_text(data, width=size.columns, color=sys.stdout.isatty(),
                                    max_cards=cards or 8))
        return
    from rich.console import Console
    from rich.live import Live

    console = Console()
    shown = cards or max(3, (size.lines - 8) // 4)

    def frame() -> Any:
        data = board_data(q, now=now(), monotonic=time.monotonic(), fetch=q.remote is not None,
                          capabilities=_caps(q))
        return render_board(data, width=console.width, max_cards=shown)

    try:
        with Live(frame(), console=console, screen=False, auto_refresh=False) as live:
            while True:
                time.sleep(max(0.5, every))
                live.update(frame(), refresh=True)
    except KeyboardInterrupt:
        pass


@app.command()
def dash(
    every: Annotated[float | None, typer.Option("--every", help="Seconds between refreshes "
                     "(default 2; 5 when the queue has a remote, which each refresh fetches).")] = None,
    queue: QueueOpt = None,
) -> None:
    """An interactive dashboard: pick a job with the arrows, act on it with one key."""
    from aq.ui.dash import run_dash
    from aq.usecases.setup import who_am_i

    q = _queue(queue)
    run_dash(q, who=who_am_i(), refresh=every or (5.0 if q.remote is not None else 2.0))


@app.command()
def stats(
    since: Annotated[str | None, typer.Option("--since", help="Only this recent history, e.g. "
                     "7d, 24h (default: all).")] = None,
    queue: QueueOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Figures from the event logs: throughput, wait and run times, pass rates, workers, engines."""
    import shutil

    from aq.core.durations import parse_duration
    from aq.usecases.stats import compute_stats, stats_json
    from aq.usecases.stats_tables import stats_text

    window = None
    if since is not None:
        try:
            window = parse_duration(since)
        except ValueError as err:
            raise UsageError(f"--since {since!r}: {err}") from None
    figures = compute_stats(_queue(queue), now=now(), since=window)
    if as_json:
        _emit(stats_json(figures))
        return
    sys.stdout.write(stats_text(figures, width=shutil.get_terminal_size((100, 40)).columns,
                                color=sys.stdout.isatty()))


@app.command()
def events(
    follow_: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events "
                       "(fetching from the remote first, when there is one).")] = False,
    every: Annotated[float, typer.Option("--every", help="Seconds between looks with --follow.")] = 2.0,
    queue: QueueOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The queue's events in time order, one line (or one JSON object) each."""
    from aq.usecases.events import all_events, event_json, event_line, follow

    q = _queue(queue)

    def show(item: Any) -> None:
        line = json.dumps(event_json(item), separators=(",", ":"), default=str) if as_json \
            else event_line(item)
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    if not follow_:
        for item in all_events(q):
            show(item)
        return
    remote = q.remote

    def fetch() -> None:
        if remote is not None:
            q.refresh_from_remote()

    try:
        for item in follow(q, poll=max(0.2, every), fetch=fetch, stop=lambda: False):
            show(item)
    except KeyboardInterrupt:
        pass


@app.command()
def doctor(
    cap: Annotated[list[str] | None, typer.Option("--cap", help="Extra capability tag (repeatable).")] = None,
    queue: QueueOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """This machine's capabilities, and a check of git, the remote, the engines and the queue."""
    from aq.errors import QueueNotFound
    from aq.infra.probe import probe
    from aq.store.config import QueueConfig
    from aq.usecases.doctor import doctor as run_doctor
    from aq.usecases.doctor import to_json

    try:
        q: Queue | None = _queue(queue)
    except QueueNotFound:
        q = None
    try:
        config = q.config if q is not None else QueueConfig()
    except AqError:
        config = QueueConfig()  # the doctor reports the broken aq.yaml itself
    report = run_doctor(q, capabilities=probe(config.engines, cap or ()))
    if as_json:
        _emit(to_json(report))
    else:
        marks = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}
        for check in report.checks:
            print(f"{marks.get(check.status, check.status)} {check.name + ':':<16} {check.detail}")
            if check.fix:
                print(f"     {'':<16} -> {check.fix}")
        print(f"capabilities: {' '.join(report.capabilities)}")
    if not report.ok:
        raise typer.Exit(ExitStatus.REFUSED)


@app.command()
def workers(queue: QueueOpt = None, as_json: JsonOpt = False) -> None:
    """Workers seen on the remote: heartbeat age on this machine's clock (on the worker's own
    clock until this machine has seen it beat), the jobs they hold."""
    import time

    from aq.core.durations import format_duration
    from aq.usecases.fleet import list_workers

    rows = list_workers(_queue(queue), monotonic=time.monotonic(), now=now())
    if as_json:
        _emit([{"worker": r.worker, "host": r.host, "heartbeat_age": r.silent_for,
                "age_from": r.age_from, "their_clock": r.their_clock, "jobs": list(r.jobs),
                "retiring": r.retiring} for r in rows])
        return
    if not rows:
        print("no worker has published a heartbeat to the remote")
    for r in rows:
        age = "first seen now" if not r.silent_for else f"heartbeat {format_duration(r.silent_for)} ago"
        age += " (its clock)" if r.age_from == "its clock" else ""
        held = ", ".join(r.jobs) or "no jobs"
        print(f"{r.worker:<24} {r.host or '?':<16} {age:<24} {held}{'  (stopped)' if r.retiring else ''}")


@app.command()
def fsck(
    history: Annotated[bool, typer.Option("--history", help="Check every commit of the branch too.")] = False,
    queue: QueueOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check that every job is in exactly one stage and every building job holds a lease."""
    from aq.usecases.checks import fsck as run_fsck

    result = run_fsck(_queue(queue), history=history)
    if as_json:
        _emit({"commits": result.commits, "jobs": result.jobs, "problems": list(result.problems),
               "ok": not result.problems})
    else:
        for problem in result.problems:
            print(problem)
        print(f"{result.jobs} jobs, {result.commits} commit(s) checked, "
              f"{len(result.problems)} problem(s)", file=sys.stderr)
    if result.problems:
        raise typer.Exit(int(ExitStatus.REFUSED))


# --- JSON shapes (pinned by tests/test_cli_json.py) -------------------------------------------

def _job_json(job: Job, verdict: Verdict | None = None) -> dict[str, Any]:
    m = job.manifest
    state = job.state
    data: dict[str, Any] = {
        "id": job.id,
        "stage": str(job.stage),
        "title": m.title if m else None,
        "priority": m.priority if m else None,
        "engine": m.engine if m else None,
        "profile": m.profile if m else None,
        "lock": m.lock if m else None,
        "deps": list(m.deps) if m else [],
        "capabilities": list(m.capabilities) if m else [],
        "tracker_item": m.tracker_item if m else None,
        "added": job.added.isoformat(),
        "attempts": state.attempt_count,
        "holder": state.holder,
        "lease_token": state.token,
        "not_before": state.not_before,
        "last_outcome": state.last_outcome,
        "out_of_scope": list(state.out_of_scope),
        "spent": {"usd": round(state.usd_used, 6), "tokens": state.tokens_used},
        "branch": {"name": state.branch, "head": state.branch_head,
                   "pushed": state.branch_pushed} if state.branch else None,
        "error": job.error,
    }
    if verdict is not None:
        data["ready"] = verdict.ready
        data["blocked"] = None if verdict.ready else {"kind": verdict.kind, "reason": verdict.reason}
    return data


def _detail_json(detail: JobDetail) -> dict[str, Any]:
    job = detail.job
    data = _job_json(job, detail.verdict)
    data.update({
        "body": job.manifest.body if job.manifest else None,
        "keys": list(job.manifest.keys) if job.manifest else [],
        "resolved": {k: {"value": v.value, "source": v.source} for k, v in detail.resolved.items()},
        "allowed_moves": list(detail.allowed),
        "attempt_log": [
            {"number": a.number, "worker": a.worker, "token": a.token, "started": a.started,
             "finished": a.finished, "outcome": a.outcome, "verify_exit": a.verify_exit,
             "log": a.log, "artifacts": list(a.artifacts), "reason": a.reason,
             "engine": a.engine, "usage": a.usage}
            for a in job.state.attempts
        ],
        "events": list(detail.events),
        "tracker": {"item": job.manifest.tracker_item, "sent": detail.tracker_sent,
                    "owed": [{"owner": owner, "since": since} for owner, since in detail.tracker_owed]}
        if job.manifest and job.manifest.tracker_item else None,
    })
    return data


def _next_json(result: NextResult) -> dict[str, Any]:
    return {
        "next": _job_json(result.chosen) if result.chosen else None,
        "halted": result.halted,
        "passed_over": [
            {"id": v.job.id, "ready": v.ready, "kind": v.kind, "reason": v.reason}
            for v in result.verdicts if result.chosen is None or v.job.id != result.chosen.id
        ],
    }


# --- the exit boundary -----------------------------------------------------------------------

def _fail(message: str, status: int) -> NoReturn:
    sys.stderr.write(f"aq: {message}\n")
    sys.stderr.flush()
    raise SystemExit(status)


def _click_exceptions() -> Any:
    """Typer >= 0.20 raises the exceptions of the click it vendors; older Typer uses click itself."""
    try:
        from typer._click import exceptions
    except ImportError:  # pragma: no cover - older Typer
        from click import exceptions  # type: ignore[import-not-found,no-redef,unused-ignore]
    return exceptions


def main() -> None:
    try:
        _main()
    finally:
        _say_notices()


def _main() -> None:
    click = _click_exceptions()
    try:
        try:
            status = app(standalone_mode=False)  # returns the code of a typer.Exit
        except click.NoArgsIsHelpError as err:
            print(err.ctx.get_help() if err.ctx else "")
            raise SystemExit(int(ExitStatus.OK)) from None
        except typer.Exit as err:
            raise SystemExit(err.exit_code) from None
        except typer.Abort:
            _fail("interrupted", 130)
        except click.UsageError as err:
            hint = f" (see 'aq {err.ctx.info_name} --help')" if err.ctx and err.ctx.info_name != "aq" else \
                " (see 'aq --help')"
            _fail(err.format_message().replace("\n", " ") + hint, int(ExitStatus.USAGE))
        except click.ClickException as err:
            _fail(err.format_message(), int(ExitStatus.USAGE))
        raise SystemExit(status if isinstance(status, int) else 0)
    except AqError as err:
        _fail(str(err), int(err.exit_status))
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(int(ExitStatus.OK)) from None
    except OSError as err:
        _fail(f"{err.filename or ''}: {err.strerror or err}".lstrip(": "), int(ExitStatus.REFUSED))
    except Exception as err:
        if os.environ.get("AQ_DEBUG"):
            raise
        _fail(f"internal error: {type(err).__name__}: {err} (set AQ_DEBUG=1 for the traceback, "
              "and please report it)", int(ExitStatus.REFUSED))
