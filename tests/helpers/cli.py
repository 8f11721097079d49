"""Running `aq` as a user would, and what it printed.

`run_aq` runs the command in this test process, through the same entry point and exit boundary
as the console script, with its own argv, working directory, environment, stdin and captured
stdout/stderr. A start of Python and aq costs more than most commands, and the suite runs ~700
of them. What a second process would change is run as one (`python -m aq`): commands that
follow or serve until stopped, environments that preload a library (faketime) or set the time
zone, calls from a thread other than the main one (a process has one working directory),
and any call that asks for it with `process=True` or AQ_TEST_PROCESS=1 (the whole suite
as real processes).
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

LONG_RUNNING = frozenset({"dash", "web", "mcp"})  # they serve until stopped
PROCESS_ONLY_FLAGS = frozenset({"--follow", "--watch"})
PROCESS_ONLY_ENV = ("LD_PRELOAD", "FAKETIME", "TZ", "PYTHON")  # read by the loader or at start


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def aq_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without any GIT_ or AQ_ setting, plus the tests' git identity."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "AQ_"))}
    env.update({
        "GIT_AUTHOR_NAME": "aq-test", "GIT_AUTHOR_EMAIL": "aq-test@example.com",
        "GIT_COMMITTER_NAME": "aq-test", "GIT_COMMITTER_EMAIL": "aq-test@example.com",
        "PYTHONPATH": str(REPO),
    })
    if os.environ.get("AQ_TEST_GIT_LOG"):  # debugging a fleet test: every git call of every aq
        env["AQ_GIT_LOG"] = os.environ["AQ_TEST_GIT_LOG"]
    env.update(extra or {})
    return env


def run_aq(*args: str, cwd: Path, input: str | None = None, env: dict[str, str] | None = None,
           timeout: float = 60, process: bool = False) -> Ran:
    """`aq ARGS` in `cwd`, as a user would run it: stdout, stderr and exit status."""
    if process or _needs_process(args, env or {}):
        done = subprocess.run(
            [sys.executable, "-m", "aq", *args], cwd=cwd, input=input, capture_output=True,
            text=True, env=aq_env(env), timeout=timeout,
        )
        return Ran(done.returncode, done.stdout, done.stderr)
    return _in_this_process(list(args), cwd, input, aq_env(env))


def _needs_process(args: tuple[str, ...], env: dict[str, str]) -> bool:
    return (bool(os.environ.get("AQ_TEST_PROCESS"))
            or threading.current_thread() is not threading.main_thread()  # argv, cwd: one each
            or (bool(args) and args[0] in LONG_RUNNING)
            or any(arg in PROCESS_ONLY_FLAGS for arg in args)
            or any(key.startswith(PROCESS_ONLY_ENV) for key in env))


def _in_this_process(args: list[str], cwd: Path, input: str | None, env: dict[str, str]) -> Ran:
    from aq.ui.cli import main

    out, err = _Captured(), _Captured()
    status: object = 0
    with _as_a_process(["aq", *args], cwd, env), contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err), _stdin(input):
        try:
            main()
        except SystemExit as exit_:
            status = exit_.code
    if isinstance(status, str):  # what sys.exit("message") prints
        err.write(status + "\n")
        status = 1
    return Ran(int(status or 0), out.text(), err.text())


@contextlib.contextmanager
def _as_a_process(argv: list[str], cwd: Path, env: dict[str, str]) -> Iterator[None]:
    """argv, working directory, environment and signal handlers as a new process would have
    them; all put back after."""
    saved_argv, saved_cwd, saved_env = sys.argv, os.getcwd(), dict(os.environ)
    saved_signals = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    sys.argv = argv
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        sys.argv = saved_argv
        for sig, handler in saved_signals.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _stdin(text: str | None) -> Iterator[None]:
    saved = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO((text or "").encode()), encoding="utf-8")
    try:
        yield
    finally:
        sys.stdin = saved


class _Captured(io.TextIOWrapper):
    """A text stream with a byte buffer under it, like a real stdout that is not a terminal."""

    def __init__(self) -> None:
        super().__init__(io.BytesIO(), encoding="utf-8", errors="replace", write_through=True)

    def text(self) -> str:
        self.flush()
        raw = self.buffer
        assert isinstance(raw, io.BytesIO)
        return raw.getvalue().decode("utf-8", errors="replace")
