"""What a claim hands to an attempt (aq.worker.attempt.execute)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aq.core.manifest import Manifest
from aq.core.usage import Usage


@dataclass(frozen=True, slots=True)
class AttemptPlan:
    """What a claim hands to `execute`."""

    job_id: str
    attempt: int
    token: str
    worker: str
    manifest: Manifest
    queue_root: Path
    run_dir: Path  # the job's run folder on this machine: aq.infra.rundir names its files
    previous_failure: str | None = None
    wall_used: float = 0.0
    persona: str | None = None
    workspaces: Path | None = None  # where a job with a repo gets its worktree (None: no repo work)
    usd_used: float = 0.0  # what the job's earlier attempts cost, for budget.usd
    tokens_used: int = 0  # and the tokens they used, for budget.tokens
    resume: tuple[Usage, str] | None = None  # retry-from: session: its usage (session id) and cwd
    verify_only: bool = False  # its engine's work is done; it waited for its children
    review_round: int = 1  # its review gate's round: reviews that asked for changes, plus one
    work_attempt: int = 0  # the attempt whose work its review judges (0: this one)
