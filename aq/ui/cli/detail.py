"""`aq show`: one job in full, as text or as JSON."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aq.infra.clock import utc_now as now
from aq.ui.cli.options import JobArg, JsonOpt, QueueOpt
from aq.ui.cli.session import caps, emit, located
from aq.ui.cli.shapes import detail_json

if TYPE_CHECKING:
    from aq.core.manifest import Budget
    from aq.usecases.jobs import JobDetail


def show(job: JobArg, queue: QueueOpt = None, as_json: JsonOpt = False) -> None:
    """Show a job: manifest, resolved settings, stage, attempts, events, why it waits."""
    from aq.usecases.jobs import show_job

    q = located(queue)
    detail = show_job(q, job, now=now(), capabilities=caps(q))
    if as_json:
        emit(detail_json(detail))
        return
    _print_detail(detail, frozenset(name for name, spec in q.config.engines.items() if spec.usage))


def _print_detail(detail: JobDetail, metered: frozenset[str] = frozenset()) -> None:
    """`metered`: the engines whose usage aq reads (an attempt of one that said nothing says so)."""
    from aq.core.usage import Usage
    from aq.usecases.jobs import job_file
    from aq.usecases.spend import describe_usage

    job = detail.job
    print(f"{job.id}: {job.manifest.title if job.manifest else '(invalid manifest)'}")
    print(f"  stage:    {job.stage}" + (f" (archived: {job_file(job)})" if job.archived else ""))
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
        holder = (f"sent by {owed[0][0]}, or anyone after trackers.takeover" if owed and owed[0][0]
                  else "let go: anyone sends it")  # "" is no one's: its holder let it go
        owing = f", {len(owed)} owed ({holder}; aq to-tracker)" if owed else ""
        print(f"  tracker:  {job.manifest.tracker_item}: {detail.tracker_sent} post(s) sent{owing}")
    _print_family(detail)
    if job.manifest is not None:
        m = job.manifest
        if m.deps:
            print(f"  deps:     {', '.join(m.deps)}")
        for name, item in detail.resolved.items():
            if item.value not in (None, False, (), []):
                print(f"  {name + ':':<15}{fmt(item.value)}  ({item.source})")
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


def detail_text(detail: JobDetail, metered: frozenset[str] = frozenset()) -> str:
    """What `aq show` prints, as a string: the dash's detail pane shows exactly that, so the
    two cannot drift apart."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        _print_detail(detail, metered)
    return out.getvalue()


def _print_family(detail: JobDetail) -> None:
    """Its parent, and its children with their stages (settled or not)."""
    manifest = detail.job.manifest
    if manifest is not None and manifest.parent:
        print(f"  parent:   {manifest.parent}")
    if detail.children:
        waiting = sum(stage in ("inbox", "building") for _, stage in detail.children)
        print(f"  children: {len(detail.children)}, {len(detail.children) - waiting} settled"
              + (" (it waits for the rest, then its verify runs)"
                 if detail.job.state.awaiting_children and waiting else ""))
        for kid, stage in detail.children:
            print(f"    {kid}  {stage}")


def _spent(usd: float, tokens: int, budget: Budget | None) -> str:
    """`$0.42 of $5.00, 12,000 tokens of 2,000,000` (what the attempts since added/requeued used)."""
    cost = f"${usd:.4f}" + (f" of ${budget.usd:.2f}" if budget and budget.usd is not None else "")
    count = f"{tokens:,} tokens" + (f" of {budget.tokens:,}" if budget and budget.tokens else "")
    return f"{cost}, {count}"


def fmt(value: Any) -> str:
    """A resolved setting as one line: a duration as one, a mapping as k=v, a list by commas."""
    if isinstance(value, float):
        from aq.core.durations import format_duration

        return format_duration(value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={fmt(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)
