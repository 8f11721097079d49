"""The stage store: jobs as files in stage folders, events as JSON lines, moves under a lock.

A job's stage is the folder its file sits in. Every change goes through `Queue.transact`,
which holds the clone's file lock, lets the change check its precondition on what is on disk
now, applies it (renames, event lines, files) and commits the touched paths; with a remote,
it pushes them as a compare-and-swap. `Queue` puts those pieces together: the layout
(paths), the reads (snapshot, profiles), the local transaction and the replica of the remote.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from aq.core.events import Event, JobState, fold
from aq.core.lifecycle import Stage
from aq.errors import AqError
from aq.infra.clock import utc_now
from aq.store.config import QueueConfig, load_config
from aq.store.eventlog import read_events
from aq.store.layout import Layout, locate_root
from aq.store.origin import Origin, find_origin
from aq.store.snapshot import Job, Snapshot, halted, read_job, read_snapshot, resolve

if TYPE_CHECKING:
    from aq.store.archive_ref import ArchiveRef
    from aq.store.hooks import MoveHooks
    from aq.store.local import Local
    from aq.store.profiles import Profiles
    from aq.store.replica import Replay, Replica, Synced
    from aq.store.sync import Remote
    from aq.store.tx import Tx

T = TypeVar("T")


class Queue:
    """One queue: its paths, its jobs as read now, and every change to it."""

    def __init__(self, root: Path) -> None:
        self.layout = Layout.at(root)
        self.root = self.layout.root
        self.qdir = self.layout.qdir
        self.git_dir = self.layout.git_dir
        self.state_dir = self.layout.state_dir

    # The writing half is built on first use: `aq ls`, `aq next` and `aq show` only read, and
    # loading the transaction and sync modules was a good part of their start-up.
    @cached_property
    def local(self) -> Local:
        from aq.store.local import Local
        from aq.store.tx import InboxWatch

        return Local(self.layout, InboxWatch(self.qdir / Stage.INBOX))

    @cached_property
    def replica(self) -> Replica:
        from aq.store.replica import Replica

        return Replica(self.local, clock=utc_now)

    @classmethod
    def locate(cls, explicit: str | None = None, cwd: Path | None = None) -> Queue:
        """`--queue`/`AQ_QUEUE` if given, else the first folder up from cwd holding queue/inbox."""
        return cls(locate_root(explicit, cwd))

    # --- paths ---------------------------------------------------------------------------

    def job_path(self, stage: Stage, job_id: str) -> Path:
        return self.layout.job_path(stage, job_id)

    def events_path(self, job_id: str) -> Path:
        return self.layout.events_path(job_id)

    def logs_dir(self, job_id: str) -> Path:
        return self.layout.logs_dir(job_id)

    def running_dir(self) -> Path:
        return self.layout.running_dir()

    def relative(self, path: Path) -> str:
        return self.layout.relative(path)

    @property
    def workspace_key(self) -> str:
        return self.layout.workspace_key

    @cached_property
    def config(self) -> QueueConfig:
        return load_config(self.root, self.state_dir)

    # --- reading -------------------------------------------------------------------------

    def profiles(self) -> Profiles:
        from aq.store.profiles import read_profiles  # lazily: only jobs that name a profile need it

        return read_profiles(self.layout)

    def halted(self) -> str | None:
        """The halt reason when queue/HALT exists, else None."""
        return halted(self.layout)

    def stage_of(self, job_id: str) -> Stage | None:
        return self.layout.stage_of(job_id)

    def read_events(self, job_id: str) -> list[Event]:
        return read_events(self.events_path(job_id))

    def state_of(self, job_id: str) -> JobState:
        return fold(self.read_events(job_id))

    def check_folders(self) -> None:
        self.layout.check_folders()

    def snapshot(self) -> Snapshot:
        return read_snapshot(self.layout)

    def resolve(self, ref: str, snapshot: Snapshot | None = None) -> Job:
        """The job whose id is `ref` or the only one starting with it. Named by its whole id,
        it is read alone: a move of one job in a queue of 10,000 reads one job."""
        if snapshot is None:
            alone = read_job(self.layout, ref.strip().removesuffix(".md"))
            if alone is not None:
                return alone
        return resolve(ref, snapshot or self.snapshot())

    # --- writing -------------------------------------------------------------------------

    def lock(self, timeout: float = 120.0) -> AbstractContextManager[None]:
        """The clone's lock: every writer of this queue on this machine takes it."""
        return self.local.lock(timeout)

    @cached_property
    def origin(self) -> Origin | None:
        """Which remote and branch this queue syncs with, without loading the sync machinery."""
        return find_origin(self.layout, self.config.remote)

    @cached_property
    def remote(self) -> Remote | None:
        from aq.store.beats import machine_id
        from aq.store.pacer import Pacer
        from aq.store.sync import LeaseObserver, Remote  # lazily: `aq ls`, `aq next` never sync

        origin = self.origin
        if origin is None:
            return None
        pacer = Pacer(self.state_dir, self.config.push_budget, boot=LeaseObserver.boot_id(),
                      machine=machine_id(self.root), lease_ttl=self.config.lease_ttl,
                      signs=LeaseObserver(self.state_dir / "leases.json").alive)
        return Remote(self.root, origin.name, origin.branch, pacer)

    @cached_property
    def archive_ref(self) -> ArchiveRef | None:
        """The archive's own ref and its checkout (aq.store.archive_ref); None outside git."""
        if self.git_dir is None:
            return None
        from aq.store.archive_ref import ArchiveRef
        from aq.store.origin import current_branch

        remote = self.remote
        return ArchiveRef(self.layout, remote,
                          remote.branch if remote is not None else current_branch(self.layout))

    def transact(self, change: Callable[[Tx], T], message: str,
                 describe: Callable[[T], str] | None = None, *,
                 replay: Replay[T] | None = None, fresh: float = 0.0) -> T:
        """Apply `change` under the lock, commit what it touched and (with a remote) push it:
        the change's result (see transact_synced)."""
        return self.transact_synced(change, message, describe, replay=replay, fresh=fresh).value

    def transact_synced(self, change: Callable[[Tx], T], message: str,
                        describe: Callable[[T], str] | None = None, *,
                        replay: Replay[T] | None = None, fresh: float = 0.0) -> Synced[T]:
        """Apply `change` under the lock, commit what it touched and (with a remote) push it:
        the change's result, and where the change is as far as the remote goes.

        `change` checks its own precondition on what is on disk, so it is simply run again on
        the remote's new tip when a push is rejected. `describe` makes the commit message from
        the result. With a remote the change counts only once pushed: unless `replay` is given,
        an unreachable remote raises RemoteUnreachable before anything changes. With `replay`, a
        change made while the remote cannot be reached is kept, and `replay(result)` is the
        change replayed on the tip when it answers again (None: nothing to replay). `fresh`: the
        first try fetches only if no process of this clone fetched within that many seconds
        (a worker's look for work: its siblings' fetches are as good as its own).
        """
        hooks = self._move_hooks()
        if hooks is not None:  # the moves it makes fire aq.yaml's hooks once committed
            change = hooks.watch(change)
        def settle(synced: Synced[T]) -> None:  # under the lock, as the transaction ends
            if hooks is not None:
                _never_failing(lambda: hooks.settle(synced.confirmed))

        if self.remote is not None:  # the lock is taken for each try, let go between them
            synced = self.replica.transact(self.remote, change, message, describe, replay,
                                           self.lock, settle, fresh)
        else:
            from aq.store.replica import Delivery, Synced

            with self.lock():  # alone: everything in queue/ is committed
                synced = Synced(self.local.apply(change, message, describe, exact=False),
                                Delivery.LOCAL)
                settle(synced)
        if hooks is not None:  # with the lock let go: a slow hook holds up no other writer
            _never_failing(hooks.fire)
        return synced

    def _move_hooks(self) -> MoveHooks | None:
        """The hooks of a transaction's moves (aq.store.hooks); None when aq.yaml sets none
        and no hook event waits to be recorded."""
        from aq.store.hooks import MoveHooks, wanted

        if not wanted(self.layout, self.config.hooks):
            return None
        from aq.infra.hooks import HookSettings

        return MoveHooks(self.layout, self.config.hooks or HookSettings(), self.local,
                         alone=self.remote is None, clock=utc_now)

    def fetch(self, remote: Remote) -> bool:
        """Fetch from the remote (under the lock). One that fails is noted for every lease
        observer of this machine: while the remote is out of sight, no lease goes silent."""
        return self.replica.fetch(remote)

    def refresh_from_remote(self, timeout: float = 120.0) -> bool:
        """For views (board, dash, events, workers): fetch, and move this clone up to the
        remote's tip only when that is a fast-forward. Nothing is adopted, salvaged, replayed or
        committed, so a view never makes a commit that only a worker would push (which the next
        worker's align would then drop). False when there is no remote or it does not answer."""
        remote = self.remote
        return False if remote is None else self.replica.refresh(remote, timeout)

    @property
    def identity(self) -> list[str] | None:
        """`-c user.name/-c user.email` when this machine has no git identity (None: no git)."""
        return self.local.identity

    # --- what this process knows of the remote (Replica's) ---------------------------------

    @property
    def unpushed(self) -> int:
        """Pieces of work this clone holds that the remote has not taken yet (replayed on its
        tip at every transaction until a push of them lands)."""
        return len(self.replica.unpushed)

    @property
    def remote_answered(self) -> bool:
        """Whether the remote answered this process's last sync with it (True before any)."""
        return self.replica.remote_answered

    @property
    def unreachable_said(self) -> str:
        """git's own line when this process's last fetch failed ('' if none did)."""
        return self.replica.unreachable_said if "replica" in self.__dict__ else ""

    @property
    def held_back(self) -> bool:
        """Whether this process holds its pushes back after the remote refused one (a hook, a
        rate limit): its changes wait here until the wait is over."""
        return "replica" in self.__dict__ and self.replica.held_back()

    @property
    def looked(self) -> bool:
        """Whether this process's last sync fetched itself (not a sibling's recent fetch read):
        what its heartbeats say of leases is then as of now."""
        return self.replica.looked

    @property
    def fetches_failed(self) -> int:
        """Fetches of this process that failed: lease figures from before one are out of date."""
        return self.replica.fetches_failed

    def take_notices(self) -> list[str]:
        """What a person should be told (commits kept on a branch...), each said once: the
        lines noted since the last call, which are then forgotten."""
        if "replica" not in self.__dict__:
            return []  # nothing was synced, so nothing was noted (and no need to load it)
        notices, self.replica.notices = self.replica.notices, []
        return notices


def _never_failing(step: Callable[[], object]) -> None:
    """A hook's step after its move landed: trouble in it (a state file not writable) is said
    in one line and never makes the move look failed."""
    try:
        step()
    except (OSError, AqError) as err:
        print(f"aq: hooks: {err}", file=sys.stderr)
