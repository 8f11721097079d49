"""aq: a job queue for coding agents whose only infrastructure is a git repository."""

__version__ = "0.1.0"
