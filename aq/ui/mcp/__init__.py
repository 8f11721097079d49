"""`aq mcp`: the queue as a Model Context Protocol server over stdio, for coding agents. Only
that command imports it (and the SDK under it)."""
