"""The one place aq starts subprocesses.

`run` is for short helpers (git); `run_streaming` is for engines and verify: its own process
group, output streamed line by line to a sink, a deadline and a stop signal that TERM the
whole group, then KILL it after a grace period.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str


def clean_env(extra: Mapping[str, str] | None = None, *, keep_git: bool = False) -> dict[str, str]:
    """The environment for a child: ours without `GIT_*` (a hook's GIT_DIR must not leak), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if keep_git or not k.startswith("GIT_")}
    if extra:
        env.update(extra)
    return env


TIMED_OUT = 124  # the exit code `run` reports for a command it stopped at its timeout, as timeout(1) does


def run(
    argv: Sequence[str],
    *,
    cwd: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    timeout: float | None = None,
) -> Completed:
    """Run a short command to completion and capture its output. A missing program raises OSError.

    At `timeout` seconds the command's whole process group is stopped (TERM, then KILL a second
    later; a git push's transport helpers too) and the result has exit code TIMED_OUT."""
    with subprocess.Popen(
        list(argv), cwd=cwd, env=dict(env) if env is not None else clean_env(),
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
        # Ctrl-C on the terminal must not kill a git commit half-way. (No preexec_fn: forking a
        # threaded process to run Python in the child prints tracebacks from logging's locks.)
        start_new_session=True,
    ) as child:
        try:
            stdout, stderr = child.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            # TERM first: git removes its lock files on TERM (a KILLed receive-pack on a path
            # remote would leave refs/...lock behind for everyone), then KILL what is left
            _kill_group(child.pid, signal.SIGTERM)
            try:
                stdout, stderr = child.communicate(timeout=1.0)
            except subprocess.TimeoutExpired:
                _kill_group(child.pid, signal.SIGKILL)
                stdout, stderr = child.communicate()
            _kill_group(child.pid, signal.SIGKILL)  # helpers that outlived their parent
            return Completed(TIMED_OUT, stdout, f"{stderr}{argv[0]}: no answer in {timeout:g}s; stopped\n")
        except BaseException:
            _kill_group(child.pid, signal.SIGKILL)
            raise
    return Completed(child.returncode, stdout, stderr)


def run_bytes(argv: Sequence[str], *, cwd: Path | str | None = None,
              timeout: float | None = 60.0) -> bytes | None:
    """What a short command prints, as bytes (a blob may be binary); None if it fails."""
    try:
        done = subprocess.run(list(argv), cwd=cwd, env=clean_env(), capture_output=True,
                              stdin=subprocess.DEVNULL, timeout=timeout, start_new_session=True)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


@dataclass(frozen=True, slots=True)
class StreamResult:
    returncode: int | None  # None: it never started (see `missing`) or was killed before exiting
    ended: str  # "exit", "timeout", "stopped", "missing", "unstartable"
    seconds: float


def run_streaming(
    argv: Sequence[str],
    *,
    cwd: Path | str,
    env: Mapping[str, str],
    sink: Callable[[bytes], None],
    deadline: float | None,
    stop: threading.Event,
    grace: float,
    clock: Callable[[], float] = time.monotonic,
    on_start: Callable[[int], None] | None = None,
) -> StreamResult:
    """Run `argv` in a new session with stdout+stderr to `sink`, until exit, `deadline` or `stop`.

    On deadline or stop the whole process group gets TERM, then KILL after `grace` seconds.
    Whatever the group left running after the main process exits is killed too.
    `on_start` gets the process group id as soon as it exists.
    """
    start = clock()
    try:
        proc = subprocess.Popen(
            list(argv), cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True,  # what a dead worker leaves is killed by this group id
        )
    except (FileNotFoundError, PermissionError, NotADirectoryError) as err:
        sink(f"aq: cannot start {argv[0]}: {err.strerror or err}\n".encode())
        return StreamResult(None, "missing", clock() - start)
    except OSError as err:  # e.g. E2BIG: the command line is longer than the system allows
        sink(f"aq: cannot start {argv[0]}: {err.strerror or err}\n".encode())
        return StreamResult(None, "unstartable", clock() - start)
    assert proc.stdout is not None
    stdout = proc.stdout
    if on_start is not None:
        on_start(proc.pid)

    def pump() -> None:
        for line in iter(stdout.readline, b""):
            sink(line)

    reader = threading.Thread(target=pump, name=f"pump-{proc.pid}", daemon=True)
    reader.start()
    ended = "exit"
    while True:
        try:
            proc.wait(timeout=0.1)
            break
        except subprocess.TimeoutExpired:
            pass
        if stop.is_set():
            ended = "stopped"
        elif deadline is not None and clock() >= deadline:
            ended = "timeout"
        else:
            continue
        stop_group(proc, grace)
        break
    _kill_group(proc.pid, signal.SIGKILL)  # leftovers of a script that exited
    reader.join(timeout=2.0)
    if not reader.is_alive():  # else a daemon outside the group holds the pipe: the reader ends with it
        stdout.close()
    code = proc.returncode if ended == "exit" else None
    return StreamResult(code, ended, clock() - start)


def stop_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    """TERM the process group, wait up to `grace` seconds, then KILL it."""
    _kill_group(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid, signal.SIGKILL)
        proc.wait()


def kill_group(pgid: int) -> None:
    """KILL a process group left behind by a worker that died (its pgid was recorded)."""
    _kill_group(pgid, signal.SIGKILL)


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def pid_alive(pid: int) -> bool:
    """True if `pid` runs; a zombie (dead, not yet reaped) counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, someone else's
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True
