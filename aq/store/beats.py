"""One heartbeat per machine: every worker of a clone on one host shares one ref,
`refs/aq/workers/<machine>`, whose payload lists every lease they hold. Each worker ticks often
and cheaply (a small file under a file lock in the state folder); a push happens only when the
machine's beat is due: its leases were last renewed `interval` ago (half the TTL by default),
a failed beat is tried again a tick later, or (holding no lease) a TTL passed, or an interval
passed and a worker started, stopped or changed what it can do. A worker that stops ticking (killed, paused) drops out of
the beat: its leases are not renewed by its siblings, so they expire as they would alone.

A commit of the queue's branch renews leases too: a worker's commit names its machine and the
machine's leases in a trailer (`Aq-Leases: <machine> <token>...`), and once its push lands each
is renewed as a beat would renew it (observers count it when they see the commit). The commit
also shows the machine alive, as a beat does, to `aq workers`, the offline alert and the push
budget's count of machines: while a machine's own claims and results keep landing it need not
beat at all, but when a worker of it starts or stops (an interval after its last beat, to be
said). Only while every machine of the fleet says in its beat that it reads trailers (LEASES:
as renewals; ALIVE: as signs of life): an older aq that does not would take a job back whose
lease only commits renewed, or count the machine gone.

Times are the machine's monotonic clock, valid within one boot (the file says which).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aq.infra.files import write_atomic
from aq.infra.proc import pid_alive

FRESH_TICKS = 3  # a worker silent for this many ticks is left out of the beat
LOCK_WAIT = 1.0  # seconds a tick waits for a sibling's beat; longer: this tick beats nothing
RENEWAL_WAIT = 0.2  # seconds a landed commit's renewal waits for the file; longer: not noted
TRAILER = "Aq-Leases:"  # a commit's line naming the leases its machine held when it was made
LEASES = "aq-leases"  # said in a beat's `reads`: this machine counts trailers as renewals
ALIVE = "aq-alive"  # ... and as signs of its machine's life (as `aq workers` sees it)
ARCHIVE_REF = "aq-archive-ref"  # ... and the archive on its own ref (aq.store.archive_ref)
READS = (LEASES, ALIVE, ARCHIVE_REF)


def machine_id(root: Path) -> str:
    """This machine's name for the clone at `root`: its host, and the clone's folder."""
    host = socket.gethostname().split(".")[0].lower() or "host"
    where = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:6]
    return f"{host}-{where}"


@dataclass(frozen=True, slots=True)
class Me:
    """What one worker says of itself at a tick."""

    worker: str
    pid: int
    tokens: tuple[str, ...]
    capabilities: tuple[str, ...]
    retiring: bool = False


@dataclass(frozen=True, slots=True)
class Timing:
    interval: float  # a held lease is renewed this often
    tick: float  # each worker ticks this often; a failed beat is tried again a tick later
    idle: float  # a machine holding no lease beats this often (to be seen by `aq workers`)


@dataclass(frozen=True, slots=True)
class Tick:
    """What a tick saw: when the machine's last beat that landed left (None: none landed in this
    boot); whether this tick pushed one, and if it landed; when each lease was last renewed."""

    landed_at: float | None
    pushed: bool = False
    landed: bool = False
    renewals: Mapping[str, float] = field(default_factory=dict)  # token -> its last beat
    by_commits: Mapping[str, float] = field(default_factory=dict)  # token -> its last commit

    def renewed(self, tokens: Sequence[str], *, commits: bool) -> float | None:
        """When all of `tokens` were last renewed (the oldest of their renewals; by a landed
        commit too with `commits`); None if one never was. With no token: when the machine's
        last beat landed."""
        if not tokens:
            return self.landed_at
        times = [_last(token, self.renewals, self.by_commits if commits else {})
                 for token in tokens]
        return min(t for t in times if t is not None) if None not in times else None


class MachineBeat:
    """The beat of one machine, shared by the workers of its clone through a file."""

    def __init__(self, state_dir: Path, machine: str, boot: str) -> None:
        self.machine = machine
        self.path = state_dir / f"beat-{machine}.json"
        self.boot = boot

    def tick(self, me: Me, now: float, timing: Timing,
             push: Callable[[dict[str, Any]], bool], wall: str, *, force: bool = False,
             commits: bool = False, alive: bool = False) -> Tick:
        """Note `me`, and push the machine's beat if it is due (or `force`d: a worker that
        stops says so at once) with `push` (payload -> landed; it may add to the payload).
        `commits`: every machine reads trailers, so a landed commit's renewal counts; `alive`:
        it counts as a sign of the machine's life too, so no beat is due for that alone."""
        from filelock import FileLock, Timeout

        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with FileLock(str(self.path.with_suffix(".lock")), timeout=LOCK_WAIT):
                data = self._load()
                workers = self._noted(data, me, now)
                seen = data.setdefault("seen", {})  # when the machine first noted each lease
                for token in me.tokens:
                    seen.setdefault(token, now)
                fresh = {name: entry for name, entry in workers.items()
                         if _fresh(entry, now, timing)}
                payload = self._payload(data, fresh, wall)
                pushed = landed = False
                # the last worker of the machine to stop says so at once: no one else will
                last_out = goodbye(payload)
                if force or last_out or self._due(data, payload, now, timing, commits, alive):
                    pushed = True
                    data["attempted"] = now
                    landed = push(payload)
                    if landed:
                        data["landed"] = now
                        _renew(data, payload["tokens"], now)
                        data["said"] = _said(payload)
                        data["seq"] = payload["seq"]
                        # a stopped worker is gone once a beat that says so landed
                        data["workers"] = {name: entry for name, entry in workers.items()
                                           if not entry.get("retiring")}
                held = {str(token) for entry in workers.values() for token in entry["tokens"]}
                for table in ("renewals", "by_commits", "seen"):
                    data[table] = {token: at for token, at in data.get(table, {}).items()
                                   if token in held}
                self._save(data)
                landed_at = data.get("landed")
                return Tick(float(landed_at) if landed_at is not None else None, pushed, landed,
                            dict(data["renewals"]), dict(data["by_commits"]))
        except Timeout:
            return Tick(None)

    def leases(self, now: float, timing: Timing) -> frozenset[str]:
        """The leases the machine's live workers hold, as its next beat would list them (for a
        commit's trailer). Read without the file's lock (it is replaced whole when written): a
        sibling pushing a beat under it does not hold up a claim."""
        return frozenset(str(token) for entry in self._load()["workers"].values()
                         if _fresh(entry, now, timing) and isinstance(entry["tokens"], list)
                         and isinstance(entry["pid"], int) and pid_alive(entry["pid"])
                         for token in entry["tokens"])

    def renewed(self, tokens: frozenset[str], at: float) -> None:
        """A landed push of the machine's commits left at `at`: their trailers renewed `tokens`
        and showed the machine alive. Its beat is due an interval later for them, not before."""
        from filelock import FileLock, Timeout

        # under the queue lock: a sibling's beat push holding the file is not waited out (the
        # renewal is only lost, and the machine's beat then comes as if it were not made)
        with contextlib.suppress(Timeout), FileLock(str(self.path.with_suffix(".lock")),
                                                    timeout=RENEWAL_WAIT):
            data = self._load()
            _renew(data, tokens, at, table="by_commits")
            data["proved"] = max(at, float(data.get("proved", at)))
            self._save(data)

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            data = {}
        if not isinstance(data, dict) or data.get("boot") != self.boot:
            data = {"boot": self.boot}
        data.setdefault("workers", {})
        return data

    def _save(self, data: Mapping[str, Any]) -> None:
        write_atomic(self.path, json.dumps(data))

    @staticmethod
    def _noted(data: dict[str, Any], me: Me, now: float) -> dict[str, dict[str, Any]]:
        """The machine's workers with `me` noted, less those whose process is gone."""
        workers: dict[str, dict[str, Any]] = data["workers"]
        workers[me.worker] = {"pid": me.pid, "tokens": list(me.tokens), "alive": now,
                              "capabilities": list(me.capabilities), "retiring": me.retiring}
        for name in list(workers):
            pid = workers[name].get("pid")
            if name != me.worker and (not isinstance(pid, int) or not pid_alive(pid)):
                del workers[name]  # killed: its leases must go unrenewed
        return workers

    def _payload(self, data: Mapping[str, Any], fresh: Mapping[str, dict[str, Any]],
                 wall: str) -> dict[str, Any]:
        tokens = sorted({str(token) for entry in fresh.values() for token in entry["tokens"]})
        return {"machine": self.machine, "host": socket.gethostname(), "wall": wall,
                "seq": int(data.get("seq", 0)) + 1, "tokens": tokens, "reads": list(READS),
                "workers": {name: {"pid": entry["pid"], "tokens": entry["tokens"],
                                   "capabilities": entry["capabilities"],
                                   "retiring": entry["retiring"]}
                            for name, entry in sorted(fresh.items())}}

    @staticmethod
    def _due(data: Mapping[str, Any], payload: Mapping[str, Any], now: float,
             timing: Timing, commits: bool, alive: bool) -> bool:
        landed, attempted = data.get("landed"), data.get("attempted")
        if attempted is not None and now - float(attempted) < timing.tick:
            return False  # a sibling just beat (or tried): at most one push a tick
        if landed is None:
            return True
        since = now - float(landed)
        # the machine's last sign of life the fleet sees: its last beat, or (`alive`) its last
        # commit that landed; past a TTL it is due, as a machine's holding nothing, to be seen
        proved = float(data.get("proved", landed)) if alive else float(landed)
        unseen = now - max(float(landed), proved) >= timing.idle
        # a worker started or stopped: said with the next beat, at most one an interval (each
        # beat is a push a forge counts)
        changed = since >= timing.interval and _said(payload) != data.get("said")
        if payload["tokens"]:  # a new lease need not wait: observers count from its claim
            # renewed by a beat (or, `commits`, by a commit that named it), else first noted
            beats, seen = data.get("renewals", {}), data.get("seen", {})
            by_commits = data.get("by_commits", {}) if commits else {}
            oldest = min(_renewed_or_seen(token, beats, by_commits, float(seen.get(token, landed)))
                         for token in payload["tokens"])
            return now - oldest >= timing.interval or unseen or changed
        return unseen or changed


def _fresh(entry: Any, now: float, timing: Timing) -> bool:
    """Whether a worker noted in the beat file ticked within FRESH_TICKS ticks (an entry that
    cannot be read, say another aq's, is not)."""
    return (isinstance(entry, dict) and isinstance(entry.get("alive"), int | float)
            and "tokens" in entry and "pid" in entry
            and now - entry["alive"] <= FRESH_TICKS * timing.tick)


def _renew(data: dict[str, Any], tokens: Iterable[str], at: float, *,
           table: str = "renewals") -> None:
    renewals = data.setdefault(table, {})
    for token in tokens:
        renewals[token] = max(at, float(renewals.get(token, at)))


def _renewed_or_seen(token: str, beats: Mapping[str, float], commits: Mapping[str, float],
                     seen: float) -> float:
    last = _last(token, beats, commits)
    return seen if last is None else last


def _last(token: str, *tables: Mapping[str, float]) -> float | None:
    """The token's latest renewal in any of `tables`; None if none has it."""
    times = [float(table[token]) for table in tables if token in table]
    return max(times) if times else None


def trailer(machine: str, tokens: Iterable[str]) -> str:
    """The line a commit carries to renew the leases its machine holds."""
    return f"{TRAILER} {machine} {' '.join(sorted(tokens))}"


def trailers(message: str) -> list[tuple[str, list[str]]]:
    """The machines a commit's message shows alive, each with the leases it renews: its trailer
    lines, in one of aq's own commits (its subject starts `aq:`); a person's commit that quotes
    one shows nothing."""
    if not message.startswith("aq:"):
        return []
    named = [line[len(TRAILER):].split() for line in message.splitlines()
             if line.startswith(TRAILER)]
    return [(words[0], words[1:]) for words in named if words]


def goodbye(payload: Mapping[str, Any]) -> bool:
    """Whether a machine's beat is its goodbye: every worker it names is stopping."""
    workers = payload.get("workers") or {}
    return bool(workers) and all(isinstance(entry, dict) and entry.get("retiring")
                                 for entry in workers.values())


def _said(payload: Mapping[str, Any]) -> str:
    """What a beat says of the machine's workers beside its leases: who, what each can do,
    whether it stops. A change is worth a beat even with no lease held."""
    workers = payload.get("workers") or {}
    return json.dumps({name: [entry.get("capabilities"), entry.get("retiring")]
                       for name, entry in workers.items()}, sort_keys=True)


def worker_beats(ref: str, payload: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """worker -> what the heartbeat at `ref` says of it: a machine's beat speaks for each of
    its workers (with the machine's host and wall time); a beat of one worker (aq before
    machine beats) for that worker alone."""
    workers = payload.get("workers")
    if not isinstance(workers, dict):
        return {str(payload.get("worker") or ref): dict(payload)}
    said = {}
    for name, entry in workers.items():
        if isinstance(entry, dict):
            said[str(name)] = {**entry, "worker": name, "host": payload.get("host"),
                               "wall": payload.get("wall"), "machine": payload.get("machine")}
    return said
