"""Adapters to the outside: processes, git, repositories, agent CLIs, the machine."""
