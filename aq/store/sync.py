"""The queue's git remote: fetch, push as compare-and-swap, heartbeats.

A push is the only lock across machines. A rejected push means another machine moved first:
the caller aligns its clone to the new tip (aq.store.clone) and decides again; nothing is ever
rebased or merged (two identical renames would merge cleanly and make two owners). A push that
fails in transport may still have landed, so it is confirmed by fetching and checking ancestry.

Heartbeats never touch the main branch: each machine force-pushes a parentless commit to
`refs/aq/workers/<machine>`, a ref only its workers write (aq.store.beats), listing every lease
they hold. Observers fetch those refs and note, on their own monotonic clock, when each one
last changed.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from aq.core.events import iso, parse_iso
from aq.core.leases import Watch, silence, watch_after
from aq.infra import gitops, proc
from aq.infra.files import write_atomic
from aq.store.beats import READS, goodbye, trailers, worker_beats
from aq.store.layout import Layout
from aq.store.origin import find_origin
from aq.store.pacer import Pacer

EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
WORKER_REFS = "refs/aq/workers"
OBSERVED_REFS = "refs/aq/observed"
ARCHIVE_REFS = "refs/aq/archive"  # + /<branch>: the archive of the queue on that branch, on the
# remote (a queue with no remote keeps it itself; aq.store.archive_ref)
FETCHED_ARCHIVES = "refs/aq/fetched/archive"  # where a fetch puts the remote's
NETWORK_TIMEOUT = 60.0  # seconds a fetch or push may take before the remote counts as not answering
RECENT_COMMITS = 100  # a first look reads when each machine last committed from these, at most
GOODBYE_WAIT = 4.0  # seconds a stopping machine's last beat waits for room in the push budget


class Push(StrEnum):
    OK = "ok"
    REJECTED = "rejected"  # another machine moved the branch first: we lost
    TRANSPORT = "transport"  # the remote did not answer: the push may or may not have landed
    REFUSED = "refused"  # the server said no (a hook, a rate limit): it did not land


# A lost race, in `git push --porcelain`'s words: the branch moved under us (said by our git,
# or by the server's as it lost the update of the ref to another push at the same moment).
_RACE = ("fetch first", "non-fast-forward", "stale info", "already exists", "cannot lock ref",
         "failed to update ref", "failed to lock", "but expected", "incorrect old value")
# An HTTP server that limits (GitHub, GitLab: 429; some say 403 with a rate-limit text).
_LIMITED = re.compile(r"\b429\b|rate.?limit|too many requests|secondary rate", re.I)


def push_outcome(done: proc.Completed) -> tuple[Push, str]:
    """How a push ended, and the server's words when it refused: a `[rejected]` line for a
    moved branch is a lost race; `[remote rejected]` (a hook declined it) or an HTTP rate
    limit is a refusal; anything else failed in transport, and may have landed."""
    if done.returncode == 0:
        return Push.OK, ""
    said = " ".join(line.removeprefix("remote:").strip() for line in done.stderr.splitlines()
                    if line.startswith("remote:") and line.removeprefix("remote:").strip())
    for line in done.stdout.splitlines():
        if not line.startswith("!"):
            continue
        status = line.split("\t")[-1]
        if "rejected]" in status and any(race in status for race in _RACE):
            return Push.REJECTED, ""
        if "[remote rejected]" in status:
            return Push.REFUSED, (said or status.split("]", 1)[-1].strip(" ()"))[:300]
    if _LIMITED.search(done.stderr):
        return Push.REFUSED, (said or gitops.reason(done))[:300]
    return Push.TRANSPORT, ""


# git's lines around a failed fetch that say nothing of why (ssh's and git's boilerplate)
_BOILERPLATE = ("warning:", "fatal: could not read from remote repository",
                "please make sure you have the correct access rights", "and the repository exists")


# A remote that will not let this clone in: no outage waited out will change that.
_DENIED = re.compile(r"permission denied|authentication failed|terminal prompts disabled|"
                     r"could not read (username|password)|\b40[13]\b|host key verification failed",
                     re.I)


def denied(said: str) -> bool:
    """Whether git's line about a failed fetch says the remote refused this clone's
    credentials (which waiting does not fix), rather than that it could not be reached."""
    return bool(_DENIED.search(said))


def _why_unreachable(done: proc.Completed) -> str:
    """The line of a failed fetch that says why: ssh's 'Permission denied (publickey)', git's
    'terminal prompts disabled', 'Could not resolve host'...; else git's own last word."""
    for line in done.stderr.splitlines():
        line = line.strip()
        if line and not line.lower().startswith(_BOILERPLATE):
            return line[:300]
    return gitops.reason(done)


@dataclass(frozen=True, slots=True)
class Fetched:
    """A fetch: whether it worked, and git's own line when it did not (an unknown host, a
    refused key, a password asked for...)."""

    ok: bool
    said: str = ""

    def __bool__(self) -> bool:
        return self.ok


@dataclass(frozen=True, slots=True)
class Remote:
    """The remote of the clone at `root`, and the branch of it that holds the queue."""

    root: Path
    name: str
    branch: str
    pacer: Pacer | None = field(default=None, compare=False)  # the push budget; every push counted

    @property
    def tracking(self) -> str:
        return f"refs/remotes/{self.name}/{self.branch}"

    @property
    def archive_ref(self) -> str:
        """The remote's ref holding the archive of the queue's branch."""
        return f"{ARCHIVE_REFS}/{self.branch}"

    @property
    def archive_tracking(self) -> str:
        """That ref as last fetched."""
        return f"{FETCHED_ARCHIVES}/{self.branch}"

    @classmethod
    def detect(cls, root: Path, configured: str | None) -> Remote | None:
        """The queue's remote (see store.origin); None for a local queue."""
        origin = find_origin(Layout.at(root), configured)
        return None if origin is None else cls(root, origin.name, origin.branch)

    def _git(self, *args: str, check: bool = True, timeout: float | None = None) -> proc.Completed:
        return gitops.git(self.root, *args, check=check, timeout=timeout)

    # --- the queue's branch: read, and pushed to as compare-and-swap --------------------------

    def fetch(self) -> Fetched:
        """Fetch the branch, the workers' heartbeat refs and the archive's: false (with git's
        line) when the remote is unreachable. Not the queue repository's submodules: looking for
        them reads the whole index."""
        done = self._git(
            "fetch", "-q", "--no-tags", "--no-write-fetch-head", "--prune", "--no-recurse-submodules",
            self.name,
            f"+refs/heads/{self.branch}:{self.tracking}",
            f"+{WORKER_REFS}/*:{OBSERVED_REFS}/*",
            f"+{ARCHIVE_REFS}/*:{FETCHED_ARCHIVES}/*", check=False, timeout=NETWORK_TIMEOUT,
        )
        if done.returncode == 0:
            return Fetched(True)
        if "couldn't find remote ref" in done.stderr:  # an empty remote: nothing pushed yet
            done = self._git("ls-remote", "-q", self.name, check=False, timeout=NETWORK_TIMEOUT)
            if done.returncode == 0:
                return Fetched(True)
        if done.returncode == proc.TIMED_OUT:
            return Fetched(False, f"no answer within {NETWORK_TIMEOUT:.0f}s")
        return Fetched(False, _why_unreachable(done))

    def tip(self) -> str | None:
        done = self._git("rev-parse", "-q", "--verify", f"{self.tracking}^{{commit}}", check=False)
        return done.stdout.strip() or None

    def head(self) -> str | None:
        done = self._git("rev-parse", "-q", "--verify", "HEAD^{commit}", check=False)
        return done.stdout.strip() or None

    def heads(self) -> tuple[str | None, str | None]:
        """HEAD and the remote's tip as last fetched, in one git call."""
        head, tip, _archive = self.tips()
        return head, tip

    def tips(self) -> tuple[str | None, str | None, str | None]:
        """HEAD, the remote's tip and its archive's as last fetched, in one git call."""
        names = ("HEAD", self.tracking, self.archive_tracking)
        done = self._git("rev-parse", *names, check=False)
        lines = [line.strip() for line in done.stdout.splitlines()]
        valid = [line if len(line) in (40, 64) and line not in names else None for line in lines]
        while len(valid) < len(names):
            valid.append(None)
        if (valid[0] is None or valid[1] is None) and valid[2] is None:  # git stopped at the
            valid[2] = gitops.commit_of(self.root, self.archive_tracking)  # first one missing
        return valid[0], valid[1], valid[2]

    def trailers(self, since: str | None, tip: str, last: int = 0
                 ) -> list[tuple[str, list[str], int]] | None:
        """The machines the commits after `since` up to `tip` (with no `since`: the `last`
        commits up to it) show alive, each with the leases it renews and when the commit was
        made, on that machine's clock (epoch seconds; their trailers, see aq.store.beats); None
        when git cannot say (`since` is not known here)."""
        span = [f"{since}..{tip}"] if since is not None else [f"-n{last}", tip]
        done = self._git("log", "--format=%x00%ct%x00%B", *span, check=False)
        if done.returncode != 0:
            return None
        fields = done.stdout.split("\0")[1:]
        return [(machine, tokens, int(stamp)) for stamp, message in zip(fields[::2], fields[1::2],
                                                                      strict=False)
                if stamp.strip().isdigit() for machine, tokens in trailers(message)]

    def is_ancestor(self, commit: str, of: str) -> bool:
        return self._git("merge-base", "--is-ancestor", commit, of, check=False).returncode == 0

    def landed(self, commit: str) -> bool | None:
        """Whether `commit` is in the remote branch now; None while the remote cannot be reached."""
        if not self.fetch():
            return None
        tip = self.tip()
        return bool(tip is not None and self.is_ancestor(commit, tip))

    def push(self, refspec: str | None = None) -> tuple[Push, str]:
        """Push HEAD to the queue's branch (or `refspec`: the archive's commit to its ref), as a
        compare-and-swap, once the push budget has room (aq.store.pacer): how it ended, and the
        server's words if it refused."""
        stamp = None
        if self.pacer is not None and self.pacer.budget is not None:  # no budget: no pacing
            stamp = self.pacer.wait_turn(self._machines())
        try:
            outcome, said = push_outcome(self._git(
                "push", "--porcelain", "-q", self.name,
                refspec or f"HEAD:refs/heads/{self.branch}", check=False, timeout=NETWORK_TIMEOUT))
        finally:
            if self.pacer is not None:
                self.pacer.pushed(stamp)
        if self.pacer is not None:
            self.pacer.count("pushes")
            if outcome in (Push.REJECTED, Push.REFUSED):
                self.pacer.count(outcome.value)
        return outcome, said

    def _machines(self) -> int:
        """The machines sharing the push budget, as the heartbeats last fetched say."""
        if self.pacer is None or self.pacer.budget is None:
            return 1
        return self.pacer.machines(payload for _commit, payload in self.observed_heartbeats().values())

    # --- heartbeats -----------------------------------------------------------------------------

    def heartbeat(self, worker_id: str, payload: Mapping[str, Any],
                  timeout: float = NETWORK_TIMEOUT, identity: Sequence[str] = ()) -> bool:
        """Force-push a parentless commit carrying `payload` to refs/aq/workers/<id>; False if it
        failed or did not finish within `timeout` seconds."""
        message = json.dumps(dict(payload), sort_keys=True)
        made = self._git(*identity, "commit-tree", EMPTY_TREE, "-m", message, check=False)
        if made.returncode != 0:
            return False
        commit = made.stdout.strip()
        turn = None
        if self.pacer is not None:
            turn = self.pacer.beat_turn(self._machines(), renews=bool(payload.get("tokens")),
                                        wait=GOODBYE_WAIT if goodbye(payload) else 0.0)
            if not turn.go:
                return False  # no room in the budget for a beat that renews nothing: next tick
        try:
            done = self._git("push", "-q", "--force", self.name,
                             f"{commit}:{WORKER_REFS}/{worker_id}", check=False, timeout=timeout)
        finally:
            if self.pacer is not None and turn is not None:
                self.pacer.pushed(turn.stamp)
        return done.returncode == 0

    def observed_heartbeats(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """worker id -> (commit of its heartbeat ref, its payload), as of the last fetch."""
        done = self._git("for-each-ref", "--format=%(objectname) %(refname) %(contents:subject)",
                         OBSERVED_REFS, check=False)
        beats = {}
        prefix = f"{OBSERVED_REFS}/"
        for line in done.stdout.splitlines():
            commit, _, rest = line.partition(" ")
            ref, _, subject = rest.partition(" ")
            if ref.startswith(prefix):
                beats[ref[len(prefix):]] = (commit, _payload(subject))
        return beats


def _payload(text: str) -> dict[str, Any]:
    """A heartbeat's payload: the one-line JSON message of its commit."""
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


class LeaseObserver:
    """When this machine last saw each lease renewed, on its own monotonic clock.

    A lease (a claim's token) is renewed when its holder's heartbeat ref changes to a commit
    that lists the token. It is expired when this machine has seen no renewal for the TTL
    while it could see the remote (aq.core.leases): counting from the first time it looked if
    it never saw one, and from the end of the last outage it noticed (`lost_sight`). No wall
    clock of any machine takes part, so a clock that is off neither steals live jobs nor keeps
    dead ones.

    Kept in the state folder so that every process on the machine shares what it saw; valid
    only within one boot (CLOCK_MONOTONIC restarts at boot).
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    @staticmethod
    @functools.cache
    def boot_id() -> str:
        """This boot's id: read once a process (each fetch and each look at the leases ask)."""
        try:
            return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        except OSError:
            return "unknown-boot"

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            data = {}
        if not isinstance(data, dict) or data.get("boot") != self.boot_id():
            data = {"boot": self.boot_id()}
        for table in ("workers", "renewed", "first", "payloads", "retries"):
            data.setdefault(table, {})
        return data

    def _save(self, data: Mapping[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, json.dumps(data))

    def lost_sight(self) -> None:
        """A fetch failed: the remote is out of this machine's sight. What the holders did
        meanwhile is unknown, so the next observation restarts every lease's silence."""
        data = self._load()
        if not data.get("dark"):
            data["dark"] = True
            self._save(data)

    def observe(self, remote: Remote, now: float, building: Mapping[str, str], *,
                gap: float = math.inf) -> tuple[dict[str, float], set[str]]:
        """Note the heartbeats fetched last (call only after a fetch that worked). Returns each
        building token's silence in seconds, and the tokens this machine has seen renewed (a
        heartbeat ref changing to list them).

        `building` maps each building job's lease token to its holder. `gap`: observations of
        the machine further apart than this do not make one watch (aq.core.leases.watch_gap).
        """
        data = self._load()
        # a commit that landed since the last look renews the leases its trailer names; when
        # which commits those are is unknown (no last look at the branch, git cannot say), the
        # watch starts again: whatever was renewed meanwhile gets a full TTL to be seen
        tip, last_tip = remote.tip(), data.get("tip")
        named: list[tuple[str, list[str], int]] | None = []
        if tip is not None and tip != last_tip:
            named = remote.trailers(last_tip, tip) if isinstance(last_tip, str) else None
        seen = data.get("watch")
        watch = watch_after(Watch(*seen) if isinstance(seen, list) and len(seen) == 2 else None,
                            now, dark=bool(data.get("dark")) or named is None, gap=gap)
        data["watch"], data["dark"], data["tip"] = [watch.since, watch.last], False, tip
        workers, renewed, first = data["workers"], data["renewed"], data["first"]
        confirmed = set(data.setdefault("confirmed", []))
        for _machine, tokens, _made in named or ():
            for token in tokens:
                renewed[token] = now
                confirmed.add(token)
        unbroken = watch.since < now  # the last look was within the gap, and saw the remote
        self._note_signs(data, remote, tip, named, now, unbroken=unbroken)
        for worker, (commit, payload) in remote.observed_heartbeats().items():
            previous = workers.get(worker, [None])[0]
            if previous != commit:
                # the third field: this machine saw it change (not only appear, nor change
                # while it was not looking, maybe long ago): an age it can tell
                workers[worker] = [commit, now, previous is not None and unbroken]
                data["payloads"][worker] = payload
                for token in payload.get("tokens", []):
                    renewed[str(token)] = now
                    if previous is not None:
                        confirmed.add(str(token))
        silent = {}
        for token in building:
            if token not in renewed:
                first.setdefault(token, now)
            silent[token] = silence(renewed.get(token, first.get(token, now)), watch, now)
        data["renewed"] = {t: v for t, v in renewed.items() if t in building}
        data["first"] = {t: v for t, v in first.items() if t in building}
        data["confirmed"] = sorted(t for t in confirmed if t in building)
        beating = {payload.get("machine") for payload in data["payloads"].values()}
        for table in ("alive", "made"):
            data[table] = {machine: at for machine, at in data[table].items() if machine in beating}
        self._save(data)
        return silent, confirmed & set(building)

    @staticmethod
    def _note_signs(data: dict[str, Any], remote: Remote, tip: str | None,
                    named: list[tuple[str, list[str], int]] | None, now: float, *,
                    unbroken: bool) -> None:
        """A machine's commits that landed since the last look show it alive: seen now (on
        this machine's clock) if this watch of the remote is unbroken, and, whatever the
        watch, when each was made (on the machine's own clock; on a first look, or one that
        cannot tell which commits landed since, from the last commits on the tip)."""
        alive = data.setdefault("alive", {})  # machine -> when a commit of it was seen landed
        made = data.setdefault("made", {})  # machine -> when its last commit was made (its clock)
        if named is None and tip is not None:
            named = remote.trailers(None, tip, last=RECENT_COMMITS)
        for machine, _tokens, stamp in named or ():
            if unbroken:
                alive[machine] = now
            made[machine] = max(stamp, int(made.get(machine, stamp)))

    def fleet_reads(self, now: float, within: float) -> frozenset[str]:
        """What every machine whose beat this machine saw change (or appear) within `within`
        seconds says it reads of commit trailers (aq.store.beats.READS); nothing before a first
        look. Until all read them, a landed commit renews no lease in the holder's own count
        (LEASES), and spares no beat (ALIVE)."""
        data = self._load()
        if not isinstance(data.get("watch"), list):
            return frozenset()
        reads = set(READS)
        for ref, seen in data["workers"].items():
            if isinstance(seen, list) and len(seen) > 1 and now - float(seen[1]) <= within:
                said = data["payloads"].get(ref, {}).get("reads")
                reads &= set(said) if isinstance(said, list) else set()
        return frozenset(reads)

    def alive(self, now: float) -> dict[str, float]:
        """machine -> seconds since this machine saw a commit of it land (its trailer)."""
        return {str(machine): now - float(at) for machine, at in self._load().get("alive", {}).items()}

    def retry_waits(self, now: float, pending: Mapping[str, float]) -> dict[str, float]:
        """Seconds each retry still waits on this machine's own clock, counted from the first
        time this machine saw it: a finishing worker's wall clock being off does not hold a
        retry back for an hour, nor let it run early.

        `pending` maps each waiting retry's key (job id and attempt) to its backoff in seconds.
        """
        data = self._load()
        first = {key: data["retries"].get(key, now) for key in pending}
        if first != data["retries"]:
            data["retries"] = first
            self._save(data)
        return {key: max(0.0, backoff - (now - first[key])) for key, backoff in pending.items()}

    def seen_changing(self) -> set[str]:
        """The workers whose heartbeat this machine has seen change, not only appear, or whose
        machine's commit it saw land: for the others, how long ago they beat is known only from
        the beat itself."""
        data = self._load()
        alive = data.get("alive", {})
        return {worker for ref, seen in data["workers"].items()
                for worker, said in worker_beats(ref, data["payloads"].get(ref, {})).items()
                if (len(seen) > 2 and seen[2]) or said.get("machine") in alive}

    def workers(self, now: float) -> dict[str, tuple[float | None, dict[str, Any]]]:
        """worker id -> (seconds since its last sign of life as seen here: its heartbeat
        changing, or a commit of its machine landing; what its last beat said of it): a
        machine's beat speaks for each of its workers, and its commits for all of them."""
        data = self._load()
        alive, made = data.get("alive", {}), data.get("made", {})
        found = {}
        for ref, seen in data["workers"].items():
            for worker, said in worker_beats(ref, data["payloads"].get(ref, {})).items():
                machine = said.get("machine")
                signs = [float(at) for at in (seen[1] if seen else None, alive.get(machine))
                         if at is not None]
                if machine in made:  # its last sign on its own clock: the later of the two
                    said["wall"] = _later(said.get("wall"), int(made[machine]))
                found[worker] = (now - max(signs) if signs else None, said)
        return found


def _later(wall: object, stamp: int) -> str:
    """The later of a beat's wall time (ISO) and a commit's (epoch seconds), as ISO."""
    made = datetime.fromtimestamp(stamp, UTC)
    try:
        beat = parse_iso(str(wall))
    except (ValueError, TypeError):
        return iso(made)
    return iso(max(beat, made))
