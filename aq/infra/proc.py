"""The one place aq starts subprocesses.

`run` is for short helpers (git); `run_streaming` is for engines and verify: its own process
group and a mark in its environment, output streamed line by line to a sink, a deadline, a
stop signal and a limit that stop its whole tree (aq.infra.proctree: the group, the descendants and
every process carrying the mark), TERM then KILL after a grace period.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from aq.infra.proctree import ProcessTree


@dataclass(frozen=True, slots=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str


# The GIT_* settings that are the user's, for every git aq or an agent runs: how to reach and
# sign in to remotes (ssh command and key, askpass, proxies, TLS, http), who commits, which
# config files to read. Every other GIT_* variable is dropped: those point git at another
# repository, index or object store (a hook that runs aq has GIT_DIR set, a git that runs it
# GIT_CONFIG_PARAMETERS) or change output aq reads (GIT_TRACE, GIT_EXTERNAL_DIFF).
GIT_KEPT_PREFIXES = ("GIT_SSH", "GIT_ASKPASS", "GIT_PROXY_", "GIT_SSL_", "GIT_HTTP_",
                     "GIT_AUTHOR_", "GIT_COMMITTER_", "GIT_CONFIG_KEY_", "GIT_CONFIG_VALUE_")
GIT_KEPT = frozenset({"GIT_CONFIG_GLOBAL", "GIT_CONFIG_SYSTEM", "GIT_CONFIG_NOSYSTEM",
                      "GIT_CONFIG_COUNT", "GIT_TERMINAL_PROMPT", "GIT_ALLOW_PROTOCOL",
                      "GIT_PROTOCOL_FROM_USER", "GIT_EXEC_PATH", "GIT_TEMPLATE_DIR"})


def users_git_setting(name: str) -> bool:
    """Whether an environment variable is kept for a child (see GIT_KEPT_PREFIXES)."""
    return not name.startswith("GIT_") or name in GIT_KEPT or name.startswith(GIT_KEPT_PREFIXES)


def clean_env(extra: Mapping[str, str] | None = None, *, keep_git: bool = False) -> dict[str, str]:
    """The environment for a child: ours, with the user's git settings but none that would
    point git elsewhere (a hook's GIT_DIR must not leak; see GIT_KEPT_PREFIXES), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if keep_git or users_git_setting(k)}
    if extra:
        env.update(extra)
    return env


TREE_LOOK = 2.0  # seconds between looks at a running engine's process tree
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
    ended: str  # "exit", "timeout", "stopped", "limit", "missing", "unstartable"
    seconds: float
    leftovers: int = 0  # processes of the run still alive after it ended, killed then


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
    stdin: bytes | None = None,
    on_stdout: Callable[[bytes], None] | None = None,
    limit: Callable[[], bool] | None = None,
    mark: str | None = None,
    err_sink: Callable[[bytes], None] | None = None,
) -> StreamResult:
    """Run `argv` in a new session with stdout and stderr to `sink`, until exit, `deadline`,
    `stop`, or `limit()` turning true (ended "limit": a budget crossed).

    `stdin` is written to the program's standard input, which is then closed; without it the
    program gets no stdin at all. stdout and stderr share one pipe, so the sink sees them in
    the order they were written, unless `on_stdout` is given: then lines of stdout alone also
    go to it (a usage reader must not see warnings on stderr) and the two are read apart, stderr
    to `err_sink` when given (a scrubber keeps state per stream). With `mark`, every process of the run carries
    `AQ_RUN_MARK=<mark>` in its environment, so that what it started in sessions of their
    own is found and stopped with it (aq.infra.proctree). On deadline, stop or limit the run gets
    TERM, then KILL after `grace` seconds; whatever is left once it exits is killed.
    `on_start` gets the process group id as soon as it exists.
    """
    from aq.infra import proctree  # lazily: only engines and verify stream; git calls `run`

    start = clock()
    if mark is not None:
        env = {**env, proctree.MARK_VAR: mark}
    try:
        proc = _spawn(argv, cwd, env, stdin is not None, separate_stderr=on_stdout is not None)
    except OSError as err:  # "unstartable": e.g. E2BIG, the command line is longer than allowed
        sink(f"aq: cannot start {argv[0]}: {err.strerror or err}\n".encode())
        missing = isinstance(err, FileNotFoundError | PermissionError | NotADirectoryError)
        return StreamResult(None, "missing" if missing else "unstartable", clock() - start)
    # known from the start and looked at now and then: a tool that scrubbed its environment is
    # still found by its parent links, as long as one was seen while its parent lived
    tree = proctree.ProcessTree(proc.pid, proc.pid, mark)
    try:
        if on_start is not None:
            on_start(proc.pid)
        tree.refresh()
        threads = _pumps(proc, sink, on_stdout, stdin, err_sink)
    except BaseException:  # nothing of a run aq could not watch is left running
        tree.stop(0.0, wait_exit=waiter(proc))
        proc.wait()
        raise
    ended = _watch(proc, tree, _Ends(stop, limit, deadline), grace, clock)
    leftovers = _end(proc, tree, threads)
    code = proc.returncode if ended == "exit" else None
    return StreamResult(code, ended, clock() - start, leftovers)


def _spawn(argv: Sequence[str], cwd: Path | str, env: Mapping[str, str], feed_stdin: bool, *,
           separate_stderr: bool) -> subprocess.Popen[bytes]:
    """Start a streamed run in a session of its own, its output pipe widened."""
    proc = subprocess.Popen(
        list(argv), cwd=cwd, env=dict(env),
        stdin=subprocess.PIPE if feed_stdin else subprocess.DEVNULL,
        # one pipe keeps the order a person reads; a usage reader needs stdout on its own
        stdout=subprocess.PIPE, stderr=subprocess.PIPE if separate_stderr else subprocess.STDOUT,
        start_new_session=True,  # what a dead worker leaves is killed by this group id
    )
    _widen(proc.stdout)
    return proc


@dataclass(frozen=True, slots=True)
class _Ends:
    """What ends a streamed run before it exits, in the order they are looked at."""

    stop: threading.Event
    limit: Callable[[], bool] | None
    deadline: float | None

    def reason(self, clock: Callable[[], float]) -> str | None:
        """"stopped", "limit" or "timeout" once one holds; None while none does."""
        if self.stop.is_set():
            return "stopped"
        if self.limit is not None and self.limit():
            return "limit"
        if self.deadline is not None and clock() >= self.deadline:
            return "timeout"
        return None


def _watch(proc: subprocess.Popen[bytes], tree: ProcessTree, ends: _Ends, grace: float,
           clock: Callable[[], float]) -> str:
    """Wait for the run to exit ("exit"), or stop its tree when one of `ends` holds; why it ended."""
    looked = clock()
    while True:
        try:
            proc.wait(timeout=0.1)
            return "exit"
        except subprocess.TimeoutExpired:
            pass
        if clock() - looked >= TREE_LOOK:
            tree.refresh()
            looked = clock()
        ended = ends.reason(clock)
        if ended is not None:
            tree.stop(grace, wait_exit=waiter(proc))
            proc.wait()
            return ended


def _end(proc: subprocess.Popen[bytes], tree: ProcessTree, threads: list[threading.Thread]) -> int:
    """After the run exited: kill what it left, let the pumps drain; how many were left."""
    # leftovers of a run that exited: its group, and what it started in sessions of its own
    leftovers = tree.sweep()
    _kill_group(proc.pid, signal.SIGKILL)
    for thread in threads:
        thread.join(timeout=2.0)  # else a daemon outside the run holds the pipe: it ends with it
    for pipe, thread in zip((proc.stdout, proc.stderr), threads, strict=False):
        if pipe is not None and not thread.is_alive():
            pipe.close()
    return len(leftovers)


PIPE_SIZE = 1 << 20  # the default most a user may give a pipe (/proc/sys/fs/pipe-max-size)


def _widen(pipe: IO[bytes] | None) -> None:
    """Give the output pipe room for a burst. A node CLI (gemini) that writes a large line and
    exits at once loses what a full 64 KiB pipe could not take: its JSON result among it."""
    if pipe is None or not hasattr(fcntl, "F_SETPIPE_SZ"):
        return
    with contextlib.suppress(OSError):
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)


def waiter(proc: subprocess.Popen[bytes]) -> Callable[[float], bool]:
    """`wait_exit` for a process tree's stop: wait up to that long for `proc`, reaping it."""
    def wait_exit(seconds: float) -> bool:
        try:
            proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            return False
        return True

    return wait_exit


def _pumps(proc: subprocess.Popen[bytes], sink: Callable[[bytes], None],
           on_stdout: Callable[[bytes], None] | None, stdin: bytes | None,
           err_sink: Callable[[bytes], None] | None = None) -> list[threading.Thread]:
    """Threads that copy stdout and stderr line by line, and feed stdin then close it."""
    assert proc.stdout is not None

    def pump(stream: IO[bytes], out: Callable[[bytes], None],
             also: Callable[[bytes], None] | None) -> None:
        # the pipe is drained to its end whatever a sink does: a sink that raised (a full
        # disk) must not leave the engine blocked on a full pipe until its deadline
        for line in iter(stream.readline, b""):
            for take in (out, also):
                if take is not None:
                    with contextlib.suppress(Exception):
                        take(line)

    def feed(pipe: IO[bytes], data: bytes) -> None:
        # a program that exits without reading all of its input is not an error of ours
        with contextlib.suppress(BrokenPipeError, OSError):
            pipe.write(data)
        with contextlib.suppress(BrokenPipeError, OSError):
            pipe.close()

    threads = [threading.Thread(target=pump, args=(proc.stdout, sink, on_stdout),
                                name=f"out-{proc.pid}", daemon=True)]
    if proc.stderr is not None:
        threads.append(threading.Thread(target=pump, args=(proc.stderr, err_sink or sink, None),
                                        name=f"err-{proc.pid}", daemon=True))
    if stdin is not None and proc.stdin is not None:
        threads.append(threading.Thread(target=feed, args=(proc.stdin, stdin),
                                        name=f"in-{proc.pid}", daemon=True))
    for thread in threads:
        thread.start()
    return threads


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
