"""The commands about jobs in the inbox: add one, list them, say what runs next, lint them."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from aq.errors import ExitStatus, ManifestError, UsageError
from aq.infra.clock import utc_now as now
from aq.ui.cli.listing import list_command, next_command
from aq.ui.cli.options import CapOpt, JsonOpt, QueueOpt
from aq.ui.cli.session import emit, located
from aq.ui.cli.shapes import added_json, lint_json

if TYPE_CHECKING:
    from aq.store.queue import Queue
    from aq.usecases.jobs import AddResult


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
        "--force", help="Add it even if its engine, engine class, profile or a dep does not exist (yet).")] = False,
    parent: Annotated[str | None, typer.Option(
        "--parent", help="Add it as a child of this job, which waits for it (see aq spawn).")
    ] = None,
    queue: QueueOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a job to the inbox and print its id."""
    _check_timeout(timeout)
    options = {"title": title, "priority": priority, "deps": deps, "verify": verify,
               "engine": engine, "profile": profile, "lock": lock, "timeout": timeout,
               "idempotency-key": key, "cwd": cwd}
    _add(file, body, options, (retry_max, retry_backoff), job_id=job_id, parent=parent,
         queue=queue, as_json=as_json, hint=None if force else ", or add with --force")


def _add(file: str | None, body: str | None, options: dict[str, str | None],
         retry: tuple[int | None, str | None], *, job_id: str | None, parent: str | None,
         queue: str | None, as_json: bool, hint: str | None) -> None:
    """add and spawn: the job's names checked (unless `hint` is None: forced), saying `hint`
    of how to add it anyway."""
    from aq.core.manifest import split_frontmatter
    from aq.usecases.jobs import check_names

    q = located(queue)
    text = _read_body(file, body)
    source = "the job body" if file is None else "stdin" if file == "-" else file
    # what the file says is content (refused: exit 1); what a flag says is the command line (2)
    front, text_body = split_frontmatter(text, source)
    fields, flags = _fields(dict(front), options, *retry)
    if job_id is not None and not job_id.strip():
        raise UsageError("--id is empty: give a job id, or leave --id out to make one from the title")
    try:
        if hint is not None:
            check_names(q, fields, source, hint=hint)
        result = _added(q, text_body, fields, job_id, parent, source, hint)
    except ManifestError as err:
        if err.key in flags:
            flag = {"idempotency-key": "key", "retry": "retry-max/--retry-backoff"}.get(err.key, err.key)
            raise UsageError(f"--{flag}: {err.problem}") from None
        raise
    if as_json:
        emit(added_json(result.job, result.created))
        return
    print(result.job.id)
    if not result.created:
        print(f"aq: {result.message}", file=sys.stderr)


def _added(q: Queue, body: str, fields: dict[str, Any], job_id: str | None, parent: str | None,
           source: str, hint: str | None) -> AddResult:
    """The job added: a child of `parent` (recorded as the worker running it, when spawned from
    inside an attempt), or one on its own, its deps there unless forced (`hint` None)."""
    import secrets

    from aq.usecases.children import spawn_child
    from aq.usecases.jobs import add_job, deps_exist
    from aq.usecases.setup import who_am_i

    if parent is None:
        return add_job(q, body, fields, job_id=job_id, now=now(), who=who_am_i(),
                       entropy=secrets.randbits(30), source=source,
                       guard=None if hint is None else deps_exist(q, fields, source, hint))
    if job_id is not None:
        raise UsageError("--id and --parent do not go together: a child's id is made from its "
                         "title")
    return spawn_child(q, parent, body, fields, now=now(),
                       who=os.environ.get("AQ_WORKER_ID") or who_am_i(),
                       entropy=secrets.randbits(30), source=source)


def spawn(
    file: Annotated[str | None, typer.Argument(help="Markdown file with the child's body (and "
                    "frontmatter), or '-' for stdin.")] = None,
    body: Annotated[str | None, typer.Option("--body", "-b", help="The child's body as text.")
                    ] = None,
    title: Annotated[str | None, typer.Option("--title", "-t")] = None,
    priority: Annotated[str | None, typer.Option("--priority", "-p",
                        help="critical, high, medium or low.")] = None,
    verify: Annotated[str | None, typer.Option("--verify", help="Shell command; exit 0 = pass.")
                      ] = None,
    engine: Annotated[str | None, typer.Option("--engine", "-e")] = None,
    profile: Annotated[str | None, typer.Option("--profile")] = None,
    key: Annotated[str | None, typer.Option("--key", help="Idempotency key (default: made of "
                   "the parent and the child's text).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Inside a running job: add a child job that it waits for. Its engine finishes, the job
    waits in the inbox until every child is settled, then its verify runs. The same child
    spawned again (a retried attempt) is not added twice."""
    parent = os.environ.get("AQ_JOB_ID")
    if not parent:
        raise UsageError("aq spawn runs inside a job's attempt (AQ_JOB_ID is not set): to add "
                         "a child from outside, use aq add --parent JOB")
    options = {"title": title, "priority": priority, "verify": verify, "engine": engine,
               "profile": profile, "idempotency-key": key}
    _add(file, body, options, (None, None), job_id=None, parent=parent,
         queue=os.environ.get("AQ_QUEUE"), as_json=as_json, hint="")


def _fields(fields: dict[str, Any], options: dict[str, str | None], retry_max: int | None,
            retry_backoff: str | None) -> tuple[dict[str, Any], set[str]]:
    """The frontmatter with the flags laid over it, and the keys the flags gave (a bad value
    there is a usage error, not bad content)."""
    flags = {k for k, v in options.items() if v is not None}
    fields.update({k: v for k, v in options.items() if v is not None})
    for key, value in (("max", retry_max), ("backoff", retry_backoff)):
        if value is not None:
            retry = dict(fields.get("retry") or {}) if isinstance(fields.get("retry"), dict) else {}
            fields["retry"] = {**retry, key: value}
    if retry_max is not None or retry_backoff is not None:
        flags.add("retry")
    deps = options.get("deps")
    if deps is not None:
        fields["deps"] = [d.strip() for d in deps.split(",") if d.strip()]
        if not fields["deps"]:
            raise UsageError(f"--deps {deps!r} names no job: give job ids separated by commas")
    return fields, flags


def _job_text(data: bytes, source: str, size: int | None = None) -> str:
    """A job file's text: UTF-8 Markdown of at most MAX_JOB_BYTES (`data` is read to one byte
    more; `size`: the file's, when known), refused in one line when it is not."""
    from aq.core.manifest import MAX_JOB_BYTES, too_big

    if max(len(data), size or 0) > MAX_JOB_BYTES:
        raise too_big(source, size)
    if b"\0" in data:
        raise ManifestError(source, "looks binary (it holds NUL bytes): a job is a Markdown text file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ManifestError(source, f"is not UTF-8 text (byte 0x{data[err.start]:02x} at offset "
                            f"{err.start}): save it as UTF-8") from None


def _read_body(file: str | None, body: str | None) -> str:
    from aq.core.manifest import MAX_JOB_BYTES

    if body is not None and file is not None:
        raise UsageError("give the body either as FILE or as --body, not both")
    if body is not None:
        return body
    if file == "-":
        return _job_text(sys.stdin.buffer.read(MAX_JOB_BYTES + 1), "stdin")
    if file is not None:
        try:
            with open(file, "rb") as opened:  # no more than a job may be: a huge file is refused
                data = opened.read(MAX_JOB_BYTES + 1)
                size = max(len(data), os.fstat(opened.fileno()).st_size)
        except OSError as err:
            raise UsageError(f"cannot read {file}: {err.strerror}") from None
        return _job_text(data, file, size)
    raise UsageError("no job body: give a FILE, '-' for stdin, or --body TEXT")


# ls and next are run by the quick path too (aq.ui.cli.quick): their bodies are in listing.py,
# and an option added here must be known there, or the quick path leaves that argv to Typer.
def _check_timeout(timeout: str | None) -> None:
    """A job that may run 45 seconds is rarely what `--timeout 45` means: a unit is needed."""
    if timeout is not None and timeout.strip().replace(".", "", 1).isdigit():
        raise UsageError(f"--timeout {timeout.strip()} has no unit: did you mean "
                         f"{timeout.strip()}m? (say {timeout.strip()}s for seconds)")


def ls_(
    stage: Annotated[list[str] | None, typer.Option("--stage", "-s", help="Only this stage "
                     "(repeatable, or comma-separated): inbox building review testing shipped "
                     "failed dead_letter.")] = None,
    ready: Annotated[bool, typer.Option("--ready", help="Only inbox jobs a worker here could take now.")] = False,
    blocked: Annotated[bool, typer.Option("--blocked", help="Only inbox jobs that wait, with why.")] = False,
    fetch: Annotated[bool, typer.Option("--fetch", help="Fetch from the queue's remote first.")] = False,
    everything: Annotated[bool, typer.Option("--all", help="Archived jobs too (aq archive), "
                          "after the others of their stage.")] = False,
    queue: QueueOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List jobs by stage, with the reason an inbox job waits."""
    list_command(stage or [], ready, blocked, fetch, queue, as_json, everything)


def next_(
    explain: Annotated[bool, typer.Option("--explain", help="Show each ready job's score and say "
                       "why every other job was passed over.")] = False,
    cap: CapOpt = None,
    queue: QueueOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """What `aq run` would take next here, and (with --explain) why."""
    next_command(explain, cap, queue, as_json)


def lint(queue: QueueOpt = None, as_json: JsonOpt = False) -> None:
    """Check every manifest, dependency and event log; exit 1 listing every problem."""
    from aq.usecases.checks import lint as run_lint

    result = run_lint(located(queue))
    if as_json:
        emit(lint_json(result))
    else:
        for problem in result.problems:
            print(problem)
        print(f"{result.jobs} jobs, {len(result.problems)} problem(s)", file=sys.stderr)
    if result.problems:
        raise typer.Exit(int(ExitStatus.REFUSED))
