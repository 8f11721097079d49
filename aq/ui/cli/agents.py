"""Ways for coding agents to use the queue: `mcp`, its tools served over stdio."""

from __future__ import annotations

from aq.infra.clock import utc_now as now
from aq.ui.cli.options import QueueOpt
from aq.ui.cli.session import located


def mcp(queue: QueueOpt = None) -> None:
    """The queue as an MCP server on stdin/stdout: tools to add, list, show, log, move jobs."""
    q = located(queue)  # before the SDK's import (~1 s): no queue here is said at once

    from aq.ui.mcp.server import serve
    from aq.usecases.setup import who_am_i

    serve(q, who=f"{who_am_i()} via mcp", clock=now)
