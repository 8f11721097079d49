"""The human gate through MCP: an agent inside a job's attempt (its server started with the
attempt's AQ_JOB_ID, as `mcp: true` gives it) may cancel or reject only its own children and
theirs, and never promote, ship or requeue; a person's server may do what the CLI does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aq.errors import MoveRefused
from aq.infra.clock import utc_now
from aq.store.queue import Queue
from aq.ui.mcp.tools import QueueTools
from tests.helpers.cli import aq_env
from tests.helpers.queue import stage_of, write_job


def tools(root: Path, inside: str | None) -> QueueTools:
    env = aq_env({"AQ_JOB_ID": inside} if inside else {})
    return QueueTools(Queue(root), who="agent via mcp", clock=utc_now, env=env)


@pytest.fixture
def family(queue_root: Path) -> Path:
    write_job(queue_root, "parent", "echo p", stage="building")
    write_job(queue_root, "child", "echo c", parent="parent")
    write_job(queue_root, "grandchild", "echo g", parent="child")
    write_job(queue_root, "stranger", "echo s")
    write_job(queue_root, "done", "echo d", stage="testing")
    return queue_root


@pytest.mark.parametrize("action", ["ship", "promote"])
def test_an_agent_in_a_job_may_not_pass_a_persons_gate(family: Path, action: str) -> None:
    with pytest.raises(MoveRefused, match=f"may not {action} a job: that is a person's call"):
        tools(family, "parent").move_job("done", action)  # type: ignore[arg-type]
    assert stage_of(family, "done") == "testing"


def test_an_agent_in_a_job_cancels_its_own_descendants_only(family: Path) -> None:
    agent = tools(family, "parent")
    with pytest.raises(MoveRefused, match="only its own children and theirs; stranger is not one"):
        agent.move_job("stranger", "cancel")
    with pytest.raises(MoveRefused, match="parent is not one"):
        agent.move_job("parent", "cancel")  # not even itself: its worker records its end
    agent.move_job("grandchild", "cancel", reason="not needed")
    assert (stage_of(family, "grandchild"), stage_of(family, "stranger")) == ("failed", "inbox")


def test_a_persons_server_moves_as_the_cli_does(family: Path) -> None:
    tools(family, None).move_job("done", "ship")
    assert stage_of(family, "done") == "shipped"


def test_an_agent_in_a_job_adds_children_only_to_its_own_family(family: Path) -> None:
    """spawn_child with `parent` named another inbox job: an agent could make any job wait for
    a child of its making (move_job was gated, spawn_child was not)."""
    agent = tools(family, "parent")
    with pytest.raises(MoveRefused, match="only to its own job and its children; stranger is "
                                          "not one"):
        agent.spawn_child("echo more", parent="stranger")
    assert [job.id for job in Queue(family).snapshot().jobs
            if job.manifest and job.manifest.parent == "stranger"] == []
    said = json.loads(agent.spawn_child("echo more", parent="chi"))  # a prefix: the job's id
    assert said["parent"] == "child" and said["created"]
