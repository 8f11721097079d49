"""Spawning a child job: a job added by a running one (`aq spawn`), or by a person for one
(`aq add --parent`). The same child spawned twice (a retried parent's attempt) is made once."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from aq.core.children import child_key
from aq.core.lifecycle import Stage
from aq.core.manifest import render_manifest
from aq.errors import MoveRefused
from aq.store.queue import Queue
from aq.usecases.jobs import AddResult, add_job

MAY_SPAWN = frozenset({Stage.INBOX, Stage.BUILDING})  # while its work is in the workers' hands


def spawn_child(queue: Queue, parent_ref: str, body: str, fields: Mapping[str, Any], *,
                now: datetime, who: str, entropy: int, source: str = "the child",
                reserved: bool = False) -> AddResult:
    """Add a child of `parent_ref` to the inbox. Without an idempotency key of its own it gets
    one made of its parent and its text, so the same child spawned again is found, not made."""
    parent = queue.resolve(parent_ref)
    _at_work(parent.id, parent.stage)
    if fields.get("children"):
        raise MoveRefused("a spawned child declares no children up front: it spawns its own "
                          "when it runs")
    own = {**fields, "parent": parent.id}
    if not own.get("idempotency-key"):
        own["idempotency-key"] = child_key(parent.id, render_manifest(own, body, source))
    return add_job(queue, body, own, job_id=None, now=now, who=who, entropy=entropy,
                   source=source, reserved=reserved, spawned=True,
                   # again under the lock: it may have moved
                   guard=lambda tx: _at_work(parent.id, tx.stage_of(parent.id)))


def _at_work(parent: str, stage: Stage | None) -> None:
    """A child is added while its parent is in the workers' hands, so that the parent waits for it."""
    if stage not in MAY_SPAWN:
        raise MoveRefused(f"{parent} is in {stage}: a child is added while its parent is in inbox "
                          "or building, so that the parent waits for it")
