"""Usage readers: what an agent CLI prints, turned into an aq.core.usage.Usage.

Each CLI reports usage in a shape of its own (tests/data/agent-cli-samples holds what real
CLIs printed against a fake model API). A reader per output format (one module per CLI family,
aq.infra.usage.registry names them) turns the lines the CLI prints on stdout, and for aider and
copilot a side file it writes, into one `Usage`.

A reader never raises: a line it cannot use (not JSON, another event, a wrong type, a count
below 0 or beyond any real run) is skipped. `usage` is the figure so far, so a budget can be
watched while the CLI streams.
"""
