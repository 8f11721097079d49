"""What a worker clears up as it starts, left by workers killed on this machine: git processes
still running in the clone, stale git lock files, and worktrees holding unpushed work."""

from __future__ import annotations

import socket

from aq.core.events import iso, rescued
from aq.core.lifecycle import Stage
from aq.errors import AqError
from aq.infra import proc
from aq.infra.gitops import clear_stale_locks, identity_args, kill_orphaned_git
from aq.infra.rescue import rescue_stale
from aq.store.tx import Tx
from aq.worker.context import WorkerContext


def recover(ctx: WorkerContext) -> None:
    """Clear what killed workers left, before the first claim."""
    with ctx.queue.lock():
        for pid in kill_orphaned_git(ctx.queue.root):
            ctx.voice.say(f"stopped git process {pid} left by a killed worker")
        for path in clear_stale_locks(ctx.queue.git_dir):
            ctx.voice.say(f"removed {path} left by a killed process")
    rescue_worktrees(ctx)


def rescue_worktrees(ctx: WorkerContext) -> None:
    """Worktrees a killed worker left on this machine: their unpushed work goes to a pushed
    `aq/<job>-rescued-<n>` branch, named in the job's event log, and the worktree goes."""
    queue = ctx.queue
    root = queue.config.workspaces_root(queue.workspace_key)
    if not (root / "worktrees").is_dir():
        return
    host = socket.gethostname()
    live = {job.id for job in queue.snapshot().jobs
            if job.stage is Stage.BUILDING and job.state.holder_host == host
            and job.state.holder_pid and proc.pid_alive(job.state.holder_pid)}
    try:
        saved = rescue_stale(root, lambda job_id: job_id in live, identity_args(queue.root))
    except AqError as err:
        ctx.voice.say(f"could not clean the worktrees left here: {err}")
        return
    for job_id, branch in saved:
        if branch:
            ctx.voice.say(f"{job_id}: work a killed worker left unpushed is on {branch}")
            _note_rescue(ctx, job_id, branch)


def _note_rescue(ctx: WorkerContext, job_id: str, branch: str) -> None:
    """The rescued branch, named in the job's event log (if the job is still in the queue)."""
    event = rescued(iso(ctx.now()), ctx.worker_id, branch,
                    why="a worker was killed with this work unpushed")

    def note(tx: Tx) -> None:
        if tx.stage_of(job_id) is not None:
            tx.append_event(job_id, event)

    try:
        ctx.queue.transact(note, f"aq: {job_id}: rescued work on {branch}", replay=lambda _: None)
    except AqError as err:
        ctx.voice.say(f"{job_id}: the rescue is not in its event log ({err})")
