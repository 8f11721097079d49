"""Multi-process fleet runs: real workers, real git remotes, faults injected for real (all slow)."""
