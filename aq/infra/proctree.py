"""An attempt's whole process tree: found, stopped and swept, including what left its group.

An engine runs in a session of its own, so killing its process group was meant to take
everything with it. But agent CLIs (claude, gemini, opencode, ...) run each shell tool under
setsid: the tool is in another session and group, survives the kill of the engine's group and
lives on as an orphan of init. So a tree's members are found three ways, from one /proc scan:

- the MARK: the engine's environment holds AQ_RUN_MARK=<random>, which every descendant
  inherits unless it scrubs its environment. It survives reparenting, so it finds what an
  engine left running after it exited.
- the PARENT LINKS: the engine's descendants by ppid, and those of every member seen since.
  They find a tool that scrubbed its environment, as long as a parent of it lives when we look
  (once a parent dies its children belong to init and the link is gone: so look before
  signalling, and remember every member seen).
- the GROUPS AND SESSIONS: the engine's process group, and any group or session a member
  led. They hold an orphan even after its leader is gone (the id stays allocated while any
  process uses it, so it cannot meanwhile name someone else's group).

Not chosen:
- PR_SET_CHILD_SUBREAPER would keep every orphan below aq, so the parent links would never
  break. But it is a property of the whole worker process, which runs several attempts in
  threads: every orphan of every attempt (and of every git) would become the worker's child.
  Reaping them needs waitpid(-1), which steals exit statuses from other threads' Popen objects;
  not reaping them leaves zombies; and which attempt an orphan belongs to would still need the
  mark. The mark gives the same reach without changing the worker.
- A cgroup (v2, with cgroup.kill) is the exact kernel tool, but needs a delegated, writable
  cgroup that containers, plain login sessions and macOS do not give. A later option.

Stopping: TERM every member (the engine's group with one killpg, the rest by pid), then CONT so
a stopped one sees it; for up to a grace period, rescan, TERM newcomers and wait for all to go.
Then rounds of: freeze, SIGSTOP every member and rescan until all are stopped and no new member
appears (a stopped process cannot fork, so the set is then closed), then KILL them all.

Pid reuse (pid_max may be 32768, and a fork loop wraps it): a member is known by its pid and its
start time (field 22 of /proc/<pid>/stat). A signal to one pid goes through a pidfd: open it,
check the start time again, signal through the pidfd; so the process checked is the process
signalled. Without pidfds the check comes just before kill(), leaving a window of microseconds.

A zombie counts as dead: the engine is reaped by its Popen's owner, orphans by init.
Without /proc (macOS, BSD) only the process group is stopped, as before.
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

MARK_VAR = "AQ_RUN_MARK"

_SLICE = 0.05  # between looks while a TERMed tree has its grace
_KILL_ROUNDS = 20  # freeze-and-KILL rounds before giving up on a tree...
_KILL_WITHIN = 5.0  # ...or seconds (a process in D state takes no signal until its I/O ends)
_ROUND_WAIT = 1.0  # how long one round waits for the KILLed to go
_FREEZE_WITHIN = 0.5  # how long one freeze waits to see every member stopped
_PF_KTHREAD = 0x00200000  # a kernel thread: never ours, and its environ is empty anyway


@dataclass(frozen=True, slots=True)
class Proc:
    """One live process as /proc showed it."""

    pid: int
    ppid: int
    pgid: int
    sid: int
    state: str
    start: int  # clock ticks after boot: with the pid, the process's identity


def supported() -> bool:
    """True where the tree can be found (Linux /proc); elsewhere only the group is stopped."""
    return sys.platform == "linux" and os.path.exists("/proc/self/stat")


def new_mark() -> str:
    """A fresh value for MARK_VAR: unique to one attempt."""
    return secrets.token_hex(16)


def read_proc(pid: int) -> Proc | None:
    """`pid` as /proc shows it now; None if it is gone, a zombie, a kernel thread or unreadable."""
    raw = _read(f"/proc/{pid}/stat")
    if raw is None:
        return None
    # comm (field 2) may hold spaces and parentheses: the other fields follow its last ')'
    fields = raw.rpartition(b")")[2].split()
    try:
        state = fields[0].decode()
        proc = Proc(pid, int(fields[1]), int(fields[2]), int(fields[3]), state, int(fields[19]))
        kernel = int(fields[6]) & _PF_KTHREAD
    except (IndexError, ValueError, UnicodeDecodeError):
        return None
    return None if kernel or state in ("Z", "X", "x") else proc


def scan() -> dict[int, Proc]:
    """Every live process, by pid: one read of /proc/<pid>/stat each."""
    try:
        names = os.listdir("/proc")
    except OSError:
        return {}
    table: dict[int, Proc] = {}
    for name in names:
        if name.isdigit() and (proc := read_proc(int(name))) is not None:
            table[proc.pid] = proc
    return table


def has_mark(pid: int, mark: str) -> bool:
    """True if `pid` started with MARK_VAR=mark in its environment."""
    data = _read(f"/proc/{pid}/environ")
    if data is None:  # gone, or not ours to read (only root reads other users' environ)
        return False
    needle = f"{MARK_VAR}={mark}\0".encode()
    return data.startswith(needle) or b"\0" + needle in data


def _read(path: str) -> bytes | None:
    """A whole /proc file, or None. Plain os calls: a scan makes hundreds, and open() costs more."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks = [os.read(fd, 1 << 16)]
        while len(chunks[-1]) == 1 << 16:  # environ may be long; stat never is
            chunks.append(os.read(fd, 1 << 16))
    except OSError:
        return None
    finally:
        os.close(fd)
    return b"".join(chunks)


def marked(mark: str) -> set[int]:
    """The live processes that carry `mark`, without ourselves."""
    return _marked(scan(), mark, None) - {os.getpid()}


def descendants(pid: int) -> set[int]:
    """The live descendants of `pid` by parent links (not `pid` itself), from one scan."""
    if pid <= 1:
        return set()
    return _reach(scan(), [pid], leaders=False, barred={0, 1}) - {pid}


def members(pid: int, pgid: int, mark: str | None) -> set[int]:
    """The live processes of an engine's tree: see the module's docstring."""
    return set(ProcessTree(pid, pgid, mark).refresh())


def stop_tree(pid: int, pgid: int, mark: str | None, grace: float, *,
              wait_exit: Callable[[float], bool] | None = None) -> list[int]:
    """TERM the engine's whole tree, KILL it after `grace` seconds; return the pids that outlived it.

    Call it before the engine is reaped (while `pid` names it). `wait_exit(seconds)` waits that
    long at most for the engine to exit and reaps it (Popen.wait), True once it has."""
    return ProcessTree(pid, pgid, mark).stop(grace, wait_exit=wait_exit)


def sweep(mark: str, pgid: int | None = None) -> list[int]:
    """KILL whatever an engine that exited left running (its mark, its group); return their pids."""
    return ProcessTree(None, pgid, mark).sweep()


class ProcessTree:
    """One engine's processes. It remembers every member it saw, so orphans stay found.

    Made when the engine starts, `refresh()` called now and then while it runs also catches
    tools that scrubbed their environment and outlived their parent."""

    def __init__(self, pid: int | None, pgid: int | None, mark: str | None) -> None:
        self.pid = pid if pid is not None and pid > 1 else None
        self.pgid = pgid if pgid is not None and pgid > 1 else None
        self.mark = mark
        self._known: dict[int, int] = {}  # pid -> start time of every member ever seen
        self._since: int | None = None  # the engine's start time: no process of its tree is older

    def refresh(self) -> dict[int, Proc]:
        """The members alive now, by pid (and remembered)."""
        table = scan()
        if self.pid is not None and self._since is None and self.pid in table:
            self._since = table[self.pid].start
        barred = _ours(table)
        found = _reach(table, self._seeds(table), leaders=True, barred=barred)
        if self.mark is not None:  # the costly part, so only for what the links did not find
            rest = {pid: proc for pid, proc in table.items() if pid not in found}
            marks = _marked(rest, self.mark, self._since)
            found |= _reach(table, marks, leaders=True, barred=barred)
        self._known.update((pid, table[pid].start) for pid in found)
        return {pid: table[pid] for pid in found}

    def stop(self, grace: float, *, wait_exit: Callable[[float], bool] | None = None) -> list[int]:
        """TERM every member, KILL what is left after `grace` seconds; the pids that outlived it."""
        if not supported():
            self._stop_group_only(grace, wait_exit)
            return []
        self._term(grace, wait_exit)
        survivors = self._kill()[1]
        if wait_exit is not None:
            wait_exit(_ROUND_WAIT)  # reap the engine if it took the KILL
        return survivors

    def sweep(self) -> list[int]:
        """KILL every member now; the pids it killed."""
        if not supported():
            if self.pgid is not None:
                _signal_group(self.pgid, signal.SIGKILL)
            return []
        return self._kill()[0]

    def _seeds(self, table: dict[int, Proc]) -> list[int]:
        """Where the links start: the engine, its group, and every member seen that is not reused."""
        for pid, start in list(self._known.items()):
            if pid in table and table[pid].start != start:
                del self._known[pid]  # that pid names another process now
        seeds = list(self._known)
        if self.pid is not None and (self.pid not in table or table[self.pid].start == self._since):
            seeds.append(self.pid)
        # the group's members, not its id: the id may name another process's children by now
        seeds.extend(pid for pid, proc in table.items() if proc.pgid == self.pgid)
        return seeds

    def _term(self, grace: float, wait_exit: Callable[[float], bool] | None) -> None:
        """TERM the tree and newcomers to it, until it is gone or `grace` seconds have passed."""
        deadline = time.monotonic() + grace
        termed: set[tuple[int, int]] = set()
        reaped = wait_exit is None
        while True:
            found = self.refresh()
            fresh = [proc for proc in found.values() if (proc.pid, proc.start) not in termed]
            # killpg only the first time: a second TERM means "now" to some programs, so a
            # newcomer to the group later is TERMed alone
            group = self.pgid if not termed else None
            for sig in (signal.SIGTERM, signal.SIGCONT):
                self._send(fresh, sig, group, found)
            termed.update((proc.pid, proc.start) for proc in fresh)
            left = deadline - time.monotonic()
            if (not found and reaped) or left <= 0:
                return
            if wait_exit is not None and not reaped:
                reaped = wait_exit(min(_SLICE, left))
            else:
                time.sleep(min(_SLICE, left))

    def _kill(self) -> tuple[list[int], list[int]]:
        """Rounds of freeze and KILL until a scan finds no member: (the killed, the survivors)."""
        killed: set[int] = set()
        deadline = time.monotonic() + _KILL_WITHIN
        for _ in range(_KILL_ROUNDS):
            if time.monotonic() >= deadline:
                break
            found = self._freeze()
            if not found:
                return sorted(killed), []
            killed |= self._send(found.values(), signal.SIGKILL, self.pgid, found)
            _await_gone(found.values(), _ROUND_WAIT)
        return sorted(killed), sorted(self.refresh())

    def _freeze(self) -> dict[int, Proc]:
        """SIGSTOP every member until a scan shows all stopped: then none can fork any more."""
        found = self.refresh()
        deadline = time.monotonic() + _FREEZE_WITHIN
        while time.monotonic() < deadline:
            running = [proc for proc in found.values() if proc.state not in ("T", "t")]
            if not running:
                break
            self._send(running, signal.SIGSTOP, self.pgid, found)
            time.sleep(0.001)  # let them take the signal before the next look
            found = self.refresh()
        return found

    def _send(self, procs: Iterable[Proc], sig: int, group: int | None,
              found: dict[int, Proc]) -> set[int]:
        """Signal `procs`: members of `group` with one killpg, the rest one by one; the pids hit."""
        procs = list(procs)
        in_group = {proc.pid for proc in found.values() if proc.pgid == group}
        if group is None or not in_group or not _signal_group(group, sig):
            in_group = set()
        hit = {proc.pid for proc in procs if proc.pid in in_group}
        hit |= {proc.pid for proc in procs if proc.pid not in in_group and send(proc, sig)}
        return hit

    def _stop_group_only(self, grace: float, wait_exit: Callable[[float], bool] | None) -> None:
        """Without /proc: TERM the group, wait for the engine, KILL the group."""
        if self.pgid is None:
            return
        _signal_group(self.pgid, signal.SIGTERM)
        if wait_exit is not None:
            wait_exit(grace)
        else:
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and _signal_group(self.pgid, 0):
                time.sleep(_SLICE)
        _signal_group(self.pgid, signal.SIGKILL)


def send(proc: Proc, sig: int) -> bool:
    """Send `sig` to the process `proc` describes, never to one that took its pid since; True if sent."""
    if proc.pid <= 1 or proc.pid == os.getpid():
        return False
    if sys.platform != "linux":
        return _send_checked(proc, sig)
    try:
        pidfd = os.pidfd_open(proc.pid)
    except ProcessLookupError:
        return False
    except OSError:  # no pidfds in this kernel, or out of descriptors
        return _send_checked(proc, sig)
    try:
        # the pidfd holds one process: if it has the start time we saw, it is the one we saw
        if not _same(proc):
            return False
        signal.pidfd_send_signal(pidfd, sig)
        return True
    except OSError:
        return False
    finally:
        os.close(pidfd)


def _send_checked(proc: Proc, sig: int) -> bool:
    if not _same(proc):
        return False
    try:
        os.kill(proc.pid, sig)
    except OSError:
        return False
    return True


def _same(proc: Proc) -> bool:
    """True if `proc.pid` still runs and is the process `proc` was."""
    now = read_proc(proc.pid)
    return now is not None and now.start == proc.start


def _signal_group(pgid: int, sig: int) -> bool:
    """killpg, except to our own group or init's; True if it reached someone."""
    if pgid <= 1 or pgid == os.getpgrp():
        return False
    try:
        os.killpg(pgid, sig)
    except OSError:
        return False
    return True


def _await_gone(procs: Iterable[Proc], within: float) -> None:
    """Wait up to `within` seconds for every one of `procs` to be gone (a zombie is gone)."""
    waiting = list(procs)
    deadline = time.monotonic() + within
    while waiting and time.monotonic() < deadline:
        waiting = [proc for proc in waiting if _same(proc)]
        if waiting:
            time.sleep(0.005)


def _marked(table: dict[int, Proc], mark: str, since: int | None) -> set[int]:
    """The processes of `table` that carry `mark`; those older than `since` cannot, so are not read."""
    return {pid for pid, proc in table.items()
            if (since is None or proc.start >= since) and has_mark(pid, mark)}


def _reach(table: dict[int, Proc], seeds: Iterable[int], *, leaders: bool,
           barred: set[int]) -> set[int]:
    """The live processes among `seeds` and below them: their children, and with `leaders` the
    members of every group or session a seed or a found process leads (or led, if it is gone).
    The walk never enters `barred`."""
    children: dict[int, list[int]] = {}
    led: dict[int, list[int]] = {}
    for proc in table.values():
        children.setdefault(proc.ppid, []).append(proc.pid)
        if leaders:
            led.setdefault(proc.pgid, []).append(proc.pid)
            if proc.sid != proc.pgid:
                led.setdefault(proc.sid, []).append(proc.pid)
    todo = [pid for pid in seeds if pid > 1 and pid not in barred]
    seen = set(todo)
    while todo:
        pid = todo.pop()
        for nxt in (*children.get(pid, ()), *led.get(pid, ())):
            if nxt not in seen and nxt not in barred:
                seen.add(nxt)
                todo.append(nxt)
    return {pid for pid in seen if pid in table}


def _ours(table: dict[int, Proc]) -> set[int]:
    """What a tree must never include: init, us, our ancestors, our process group."""
    me, group = os.getpid(), os.getpgrp()
    barred = {0, 1, me} | {pid for pid, proc in table.items() if proc.pgid == group}
    pid = me
    while pid in table and pid > 1:
        pid = table[pid].ppid
        barred.add(pid)
    return barred


__all__ = [
    "MARK_VAR", "Proc", "ProcessTree", "descendants", "has_mark", "marked", "members",
    "new_mark", "read_proc", "scan", "send", "stop_tree", "supported", "sweep",
]
