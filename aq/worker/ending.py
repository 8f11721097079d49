"""How an attempt ended, judged from how its engine and then its verify ended: the outcome, a
line saying what happened, and the exit codes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aq.core.lifecycle import Outcome
from aq.core.usage import Usage
from aq.infra.proc import StreamResult
from aq.usecases.spend import Meter


@dataclass(frozen=True, slots=True)
class Ending:
    """How an attempt ended: what its result is made from."""

    outcome: Outcome
    detail: str
    verified: bool | None = None
    exit_code: int | None = None
    verify_exit: int | None = None


def engine_ending(ran: StreamResult, meter: Meter, usage: Usage | None, *, program: str,
                  limit: float, note: Callable[[str], None]) -> Ending | None:
    """How the attempt ended with its engine's run (`program` its argv[0], `usage` what it used,
    `limit` the seconds it had), or None when verify is next; `note` takes a line for the log."""
    if ran.ended == "missing":
        return Ending(Outcome.ENGINE_MISSING, f"could not start {program!r}")
    if ran.ended == "unstartable":
        return Ending(Outcome.ENGINE_FAILED,
                      f"could not start {program!r} (a prompt too long for a command line? "
                      "use input: stdin or {prompt_file} in the engine's cmd)")
    # stopped by aq as its usage crossed the budget, or by the CLI at the cap aq gave it; a run
    # that ended on its own is judged as any other (what it cost still counts for the next)
    capped = meter.capped(usage)
    if ran.ended == "limit" or capped:
        return Ending(Outcome.BUDGET_EXCEEDED,
                      meter.crossed or capped or "the job's budget is used up",
                      exit_code=ran.returncode)
    if meter.spend.usd_left is not None and usage is not None and usage.cost_usd is None:
        note("budget.usd not enforced: the engine reported no cost and aq.yaml prices: has "
             f"no price for {', '.join(usage.models) or 'its model'}")
    if ran.ended == "stopped":
        return Ending(Outcome.INTERRUPTED, "stopped while the engine ran")
    if ran.ended == "timeout":
        return Ending(Outcome.TIMEOUT, f"engine ran past the {limit:.0f}s limit")
    if ran.returncode != 0:
        return Ending(Outcome.ENGINE_FAILED, f"engine exited with {ran.returncode}",
                      exit_code=ran.returncode)
    cli_error = usage.cli_error if usage else None
    if cli_error:
        return Ending(Outcome.ENGINE_FAILED,
                      f"engine exited 0 but reported a failure: {cli_error}", exit_code=0)
    return None


def verify_ending(checked: StreamResult, usage: Usage | None, *, limit: float) -> Ending:
    """How the attempt ended with its verify (`usage` what the engine used)."""
    if checked.ended == "stopped":
        return Ending(Outcome.INTERRUPTED, "stopped while verify ran", exit_code=0)
    if checked.ended == "timeout":
        return Ending(Outcome.TIMEOUT, f"verify ran past the {limit:.0f}s limit", exit_code=0)
    if checked.ended in ("missing", "unstartable"):
        return Ending(Outcome.VERIFY_FAILED, "bash is not installed", exit_code=0)
    if checked.returncode != 0:
        return Ending(Outcome.VERIFY_FAILED, f"verify exited with {checked.returncode}",
                      verified=False, exit_code=0, verify_exit=checked.returncode)
    return Ending(Outcome.OK, "engine exited 0; verify passed" + denied(usage),
                  verified=True, exit_code=0, verify_exit=0)


def denied(usage: Usage | None) -> str:
    """What the detail adds for tool calls the engine was denied (a job without yolo)."""
    if usage is None or not usage.permission_denials:
        return ""
    return f" ({usage.permission_denials} tool call(s) denied: the job does not set yolo)"
