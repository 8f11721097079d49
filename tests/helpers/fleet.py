"""A fleet on one machine: a bare remote, a seed clone made by `aq init`, clones, and `aq` as real processes.

Every process a test starts runs in its own session, so teardown can kill it with all it started.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aq.core.manifest import Manifest, parse_manifest
from aq.store.beats import machine_id
from aq.usecases.setup import init_queue
from tests.helpers.cli import Ran, aq_env, run_aq
from tests.helpers.git import git
from tests.helpers.queue import STAGES, write_job
from tests.helpers.waiting import wait_until

FAST = ("--poll", "0.1", "--heartbeat", "0.5s")

# The fleet runs' sizes: CI's by default (its whole run must stay under 6 minutes on 2 cores),
# the sizes they were written with under AQ_SOAK=1, for a longer hunt for rare races.
SOAK = os.environ.get("AQ_SOAK") == "1"


# `aq` behind a start line: imports done first, then it waits for the gate file, then runs the
# real CLI entry point. Processes released together race for real, not by their start-up order.
GATED = """
import os, sys, time
import aq.ui.cli.app, aq.worker.runner, aq.usecases.jobs, aq.usecases.moves, aq.store.sync  # the imports are paid before the gate

gate = sys.argv[1]
open(f"{gate}.ready-{os.getpid()}", "w").close()
end = time.monotonic() + 120
while not os.path.exists(gate):
    if time.monotonic() > end:
        sys.exit(99)
    time.sleep(0.005)
sys.argv = ["aq", *sys.argv[2:]]
aq.ui.cli.main()
"""


# a command run under its own hostname (user + UTS namespaces): another machine, as far as aq can tell
AS_HOST = ("unshare", "--user", "--map-root-user", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"')


def can_fake_hosts() -> bool:
    try:
        done = subprocess.run([*AS_HOST, "aq-probe", "hostname"], capture_output=True, text=True,
                              timeout=30)
    except OSError:
        return False
    return done.returncode == 0 and done.stdout.strip() == "aq-probe"


def machine_ref(root: Path, host: str | None = None) -> str:
    """The heartbeat ref of the workers of the clone at `root` (on `host`, for workers started
    with `host=`; else this machine)."""
    machine = machine_id(root)
    if host is not None:
        machine = f"{host.split('.')[0].lower()}-{machine.rsplit('-', 1)[1]}"
    return f"refs/aq/workers/{machine}"


def ledger_rows(path: Path) -> list[list[str]]:
    """Lines `job attempt worker` that jobs appended to a file outside every clone."""
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def ledger_body(ledger: Path, then: str = "") -> str:
    return f'echo "$AQ_JOB_ID $AQ_ATTEMPT $AQ_WORKER_ID" >> {ledger}\n{then}'



class Fleet:
    """A bare remote, a seed clone holding the queue, and clones of it; every process it starts."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.bare = base / "remote.git"
        self.seed = base / "seed"
        self.clones: list[Path] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.names: dict[int, str] = {}
        self.logs = base / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.bare.mkdir()
        git(self.bare, "init", "-q", "--bare", "-b", "main")
        init_queue(self.seed)
        self._identify(self.seed)
        config = self.seed / "aq.yaml"
        config.write_text(config.read_text().replace("default_engine: claude", "default_engine: shell")
                          .replace("kill_grace: 10s", "kill_grace: 2s"))
        git(self.seed, "checkout", "-q", "-B", "main")
        git(self.seed, "commit", "-q", "-m", "shell engine for tests", "--", "aq.yaml")
        git(self.seed, "remote", "add", "origin", str(self.bare))
        git(self.seed, "push", "-q", "-u", "origin", "HEAD:main")

    @staticmethod
    def _identify(root: Path) -> None:
        git(root, "config", "user.name", "aq-test")
        git(root, "config", "user.email", "aq-test@example.com")

    def clone(self, name: str | None = None) -> Path:
        root = self.base / (name or f"clone{len(self.clones)}")
        git(self.base, "clone", "-q", str(self.bare), str(root))
        self._identify(root)
        self.clones.append(root)
        return root

    # --- processes ---------------------------------------------------------------------------

    def aq(self, root: Path, *args: str, timeout: float = 60, env: dict[str, str] | None = None) -> Ran:
        return run_aq(*args, cwd=root, timeout=timeout, env=env)

    def start(self, root: Path, *args: str, name: str, gate: Path | None = None,
              env: dict[str, str] | None = None, host: str | None = None) -> subprocess.Popen[bytes]:
        """`aq ARGS` in `root` in the background (its own session); behind `gate` if given; on a
        machine of its own named `host` (its own hostname, so no pid of it means anything elsewhere)."""
        head = [sys.executable, "-c", GATED, str(gate)] if gate else [sys.executable, "-m", "aq"]
        if host is not None:
            head = [*AS_HOST, host, *head]
        n = len(self.procs)
        with open(self.logs / f"{n}-{name}.out", "wb") as out, \
                open(self.logs / f"{n}-{name}.err", "wb") as err:
            proc = subprocess.Popen([*head, *args], cwd=root, env=aq_env(env), stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=err, start_new_session=True)
        self.procs.append(proc)
        self.names[proc.pid] = f"{n}-{name}"
        return proc

    def worker(self, root: Path, name: str, *args: str, lease: str = "3s", gate: Path | None = None,
               env: dict[str, str] | None = None, host: str | None = None) -> subprocess.Popen[bytes]:
        """`aq run` polling every 0.1 s, a heartbeat every 0.5 s and a lease TTL of `lease`."""
        return self.start(root, "run", "--worker", name, *FAST, "--lease-ttl", lease, *args,
                          name=name, gate=gate, env=env, host=host)

    def release(self, gate: Path, count: int, within: float = 60) -> None:
        """Open `gate` once `count` gated processes have done their imports and wait at it."""
        assert wait_until(lambda: len(list(gate.parent.glob(f"{gate.name}.ready-*"))) >= count,
                          within), f"gated processes did not get ready at {gate}"
        gate.touch()

    def out(self, proc: subprocess.Popen[bytes]) -> str:
        return (self.logs / f"{self.names[proc.pid]}.out").read_text()

    def err(self, proc: subprocess.Popen[bytes]) -> str:
        return (self.logs / f"{self.names[proc.pid]}.err").read_text()

    def finish(self, proc: subprocess.Popen[bytes], timeout: float = 60) -> int:
        """Wait for `proc` to exit; its code. A process still running at the deadline fails the test."""
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill(proc)
            pytest.fail(f"{self.names[proc.pid]} still running after {timeout}s:\n{self.out(proc)}"
                        f"\n{self.err(proc)}")

    @staticmethod
    def kill(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                self.kill(proc)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)

    # --- the remote, as the truth ---------------------------------------------------------------

    def tip(self) -> str:
        return git(self.bare, "rev-parse", "main").strip()

    def stages_at(self, commit: str = "main") -> dict[str, list[str]]:
        """job id -> the stages its file is in at `commit` of the remote."""
        found: dict[str, list[str]] = {}
        for path in git(self.bare, "ls-tree", "-r", "--name-only", commit, "--", "queue").splitlines():
            parts = path.split("/")
            if len(parts) == 3 and parts[1] in STAGES and parts[2].endswith(".md"):
                found.setdefault(parts[2][:-3], []).append(parts[1])
        return found

    def manifests(self) -> dict[str, tuple[list[str], Manifest]]:
        """job id -> (the stages its file is in, its manifest) at the remote's main."""
        found = {}
        for job_id, stages in self.stages_at().items():
            text = git(self.bare, "show", f"main:queue/{stages[0]}/{job_id}.md")
            found[job_id] = (stages, parse_manifest(job_id, text, job_id))
        return found

    def children(self, parent: str) -> dict[str, list[str]]:
        """child id -> the stages its file is in at the remote's main."""
        return {job_id: stages for job_id, (stages, manifest) in self.manifests().items()
                if manifest.parent == parent}

    def stage(self, job_id: str) -> str | None:
        where = self.stages_at().get(job_id, [])
        assert len(where) <= 1, f"{job_id} is in {where} on the remote"
        return where[0] if where else None

    def events(self, job_id: str, kind: str | None = None) -> list[dict[str, Any]]:
        """The job's events as the remote's main branch holds them."""
        done = subprocess.run(["git", "show", f"main:queue/.events/{job_id}.jsonl"], cwd=self.bare,
                              capture_output=True, text=True, env=aq_env(), timeout=60)
        if done.returncode != 0:
            return []
        found = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
        return [event for event in found if kind is None or event.get("type") == kind]

    def claim_commits(self) -> dict[str, list[str]]:
        """job id -> the commits of the remote's main that move it from inbox to building."""
        log = git(self.bare, "log", "--first-parent", "--no-renames", "--format=@%H", "--name-status",
                  "main", "--", "queue")
        claims: dict[str, list[str]] = {}
        commit = ""
        changes: set[str] = set()

        def note() -> None:
            for line in changes:
                status, _, path = line.partition("\t")
                parts = path.split("/")
                if status == "A" and len(parts) == 3 and parts[1] == "building":
                    job_id = parts[2][:-3]
                    if f"D\tqueue/inbox/{job_id}.md" in changes:
                        claims.setdefault(job_id, []).append(commit)

        for line in log.splitlines():
            if line.startswith("@"):
                note()
                commit, changes = line[1:], set()
            elif line.strip():
                changes.add(line)
        note()
        return claims

    # --- the seed: where a person adds jobs -----------------------------------------------------

    def drop_jobs(self, jobs: dict[str, tuple[str, dict[str, Any]]], message: str = "add jobs") -> None:
        """Write jobs into the seed's inbox by hand, commit and push them (retrying a lost push)."""
        for _ in range(20):
            git(self.seed, "fetch", "-q", "origin")
            git(self.seed, "reset", "-q", "--hard", "origin/main")
            for job_id, (body, keys) in jobs.items():
                write_job(self.seed, job_id, body, **keys)
            git(self.seed, "add", "queue/inbox")
            git(self.seed, "commit", "-q", "-m", message)
            if subprocess.run(["git", "push", "-q", "origin", "HEAD:main"], cwd=self.seed,
                              capture_output=True, env=aq_env(), timeout=60).returncode == 0:
                return
            time.sleep(0.2)
        pytest.fail("could not push the jobs to the remote")

    def pull_seed(self) -> None:
        git(self.seed, "fetch", "-q", "origin")
        git(self.seed, "reset", "-q", "--hard", "origin/main")


@contextlib.contextmanager
def fleet_in(base: Path, clones: int) -> Iterator[Fleet]:
    fleet = Fleet(base)
    try:
        for _ in range(clones):
            fleet.clone()
        yield fleet
    finally:
        fleet.close()
