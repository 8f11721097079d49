"""The fleet over ssh and smart HTTP (issue 17, test 5): a real `sshd` and `git http-backend`
behind a real HTTPS server on 127.0.0.1. Workers race as over file://; the server killed with
kill -9 in the middle of a push (before its ref moved, or after) and answering 5xx costs no job
and runs none twice; a remote that asks for credentials fails fast, never on a prompt."""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers.chaos import Fleet, Slot, audit, check_survivors_and_dead_letters, run_chaos
from tests.helpers.cli import aq_env
from tests.helpers.git import git
from tests.helpers.servers import HttpGit, PushTrap, Server, Sshd, Unavailable, keygen
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.slow

RACE_JOBS = 6
RACERS = 4  # clones, one worker each
CHAOS_JOBS = 10
DOWN_FOR = 1.5  # seconds the server stays dead: under the lease TTL, over a push's confirming
# the faults of each chaos run, in order: kill -9 of the server while a push to main is held
# before its ref moves or after; an answer 5xx before git sees the push, or after it took it
FAULTS = {"ssh": ("before", "after"), "https": ("before", "5xx-after", "after", "5xx-before")}


def serve(kind: str, fleet: Fleet, passwords: bool = False, auth: str | None = None) -> Server:
    """The fleet's remote served over `kind`; skipped, saying why, where that cannot run."""
    folder = fleet.root / kind
    try:
        server: Server = (Sshd(folder, passwords=passwords) if kind == "ssh"
                          else HttpGit(folder, fleet.remote.parent, auth=auth))
        server.__enter__()
    except Unavailable as why:
        pytest.skip(f"{kind} cannot run here: {why}")
    return server


@pytest.fixture(params=["ssh", "https"])
def transport(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Fleet, Server]]:
    # over ssh each fetch or push is a new login (~0.2 s): a heartbeat every 2 s, not every 1 s
    with Fleet(tmp_path, ttl="8s", heartbeat="2s", poll="0.2") as fleet:
        server = serve(request.param, fleet)
        try:
            yield fleet, server
        finally:
            server.kill()


def clone_over(fleet: Fleet, server: Server, name: str) -> Path:
    """A clone whose origin is the remote as `server` serves it (cloned from its path first,
    which is the same repository)."""
    path = fleet.clone(name)
    git(path, "remote", "set-url", "origin", server.url(fleet.remote))
    return path


def claim_commits(remote: Path) -> Counter[str]:
    """job id -> how many commits of the remote's main move it from the inbox to building."""
    log = "\n" + git(remote, "log", "--no-renames", "--format=@%H", "--name-status", "main",
                     "--", "queue")
    claims: Counter[str] = Counter()
    for commit in log.split("\n@")[1:]:
        changes = {line for line in commit.splitlines() if line.strip()}
        for line in changes:
            status, _, path = line.partition("\t")
            name = path.rpartition("/")[2]
            if (status == "A" and path.startswith("queue/building/")
                    and f"D\tqueue/inbox/{name}" in changes):
                claims[name[:-3]] += 1
    return claims


def claims_committed(clone: Path) -> list[tuple[str, str]]:
    """(job id, worker) of every claim commit made in this clone, landed or refused (its reflog)."""
    made = []
    for subject in git(clone, "reflog", "--format=%gs").splitlines():
        job, by = re.search(r"(?:: |; )claim (\S+)", subject), re.search(r" by ([^;\s]+)", subject)
        if subject.startswith("commit") and job and by:
            made.append((job[1], by[1]))
    return made


def test_every_job_is_claimed_once_and_run_once(transport: tuple[Fleet, Server]) -> None:
    """Four workers on four clones drain a batch of trivial jobs through the server: every job
    is claimed by one worker, its one claim landed, and it ran once, under that claim."""
    fleet, server = transport
    ids = [f"race-{n:02d}" for n in range(RACE_JOBS)]
    fleet.seed(ids)
    clones = [clone_over(fleet, server, f"clone{n}") for n in range(RACERS)]
    workers = [fleet.start(f"racer{n}", clone, env=server.client_env)
               for n, clone in enumerate(clones)]
    for worker in workers:
        wait_for(lambda w=worker: not w.alive(), 120, f"{worker.name} drains the queue and exits")
        assert worker.proc.returncode == 0, worker.output()

    result = audit(fleet, ids)
    assert result.problems == [], fleet.tail()
    assert (result.executions, result.extra, result.reclaims) == (RACE_JOBS, 0, 0), result.figures()
    assert set(result.stages.values()) == {"testing"}
    winner = {}
    for job_id in ids:
        claimed = [e for e in result.events[job_id] if e["type"] == "claimed"]
        finished = [e for e in result.events[job_id] if e["type"] == "finished"]
        assert len(claimed) == 1, (job_id, claimed)
        assert [(e["by"], e["token"], e["outcome"]) for e in finished] == [
            (claimed[0]["by"], claimed[0]["token"], "ok")], (job_id, finished)
        winner[job_id] = claimed[0]["by"]
    assert result.stale == 0
    assert claim_commits(fleet.remote) == Counter(dict.fromkeys(ids, 1))

    # the race was real: some worker committed a claim that another worker's push beat
    lost = [(job_id, by) for clone in clones for job_id, by in claims_committed(clone)
            if winner.get(job_id) != by]
    assert lost, "no worker lost a claim: the workers did not race"


# --- the server killed in the middle of a push --------------------------------------------------

@dataclass
class Fault:
    kind: str  # before, after, 5xx-before, 5xx-after
    armed_at: float
    commit: str | None = None  # the push it caught
    down_at: float | None = None
    up_at: float | None = None


@dataclass
class ServerFaults:
    """The chaos loop's extra fault (called on its every round): work through `plan`, one fault
    at a time. A kill sets a trap for the next push to main; once a push is held there the
    server gets kill -9 (every connection with it) and is started again DOWN_FOR seconds later.
    A 5xx fault has the server answer the next push to main with an error. While faults remain,
    jobs are added (as a person does) whenever few wait in the inbox: a fast machine cannot end
    the run before its faults, nor a push of the run's end be held with nobody to end it."""

    fleet: Fleet
    seed: Path
    ids: list[str]  # the run's jobs: the chaos loop and the audit see the ones added here
    server: Server
    trap: PushTrap
    plan: list[str]
    gap: float = 1.0  # seconds between one fault's end and the next
    done: list[Fault] = field(default_factory=list)
    missed: list[Fault] = field(default_factory=list)
    current: Fault | None = None
    next_at: float = 1.0
    looked_at: float = -1.0

    def __call__(self, elapsed: float) -> None:
        if (self.plan or self.current) and elapsed - self.looked_at >= 0.5:
            self.looked_at = elapsed
            if sum(stages == ["inbox"] for stages in self.fleet.stages().values()) < 5:
                more = [f"more-{len(self.ids) + n:02d}" for n in range(6)]
                self.fleet.drop(self.seed, more)
                self.ids += more
        if self.current is None:
            if self.plan and elapsed >= self.next_at:
                self.current = self._arm(self.plan.pop(0), elapsed)
        elif self._step(self.current, elapsed):
            self.next_at, self.current = elapsed + self.gap, None

    def end(self) -> None:
        """Whatever the run did: no trap left, no push answered with an error, the server up."""
        self.trap.disarm()
        if isinstance(self.server, HttpGit):
            self.server.forget_failures()
        if not self.server.alive():
            self.server.start()

    def _arm(self, kind: str, elapsed: float) -> Fault:
        if kind.startswith("5xx-"):
            assert isinstance(self.server, HttpGit)
            self.server.fail_next_push(kind[4:])
        else:
            self.trap.arm(kind)
        return Fault(kind, elapsed)

    def _step(self, fault: Fault, elapsed: float) -> bool:
        """Move `fault` on; True once it is over."""
        if fault.down_at is not None:
            if elapsed < fault.down_at + DOWN_FOR:
                return False
            self.server.start()
            fault.up_at = elapsed
            self.done.append(fault)
            return True
        if fault.kind.startswith("5xx-"):
            assert isinstance(self.server, HttpGit)
            fault.commit = self.server.failed(fault.kind[4:])
        else:
            fault.commit = self.trap.held(fault.kind)
            if fault.commit:
                self.server.kill()
                fault.down_at = elapsed
                return False
        if fault.commit:
            self.done.append(fault)
            return True
        if elapsed - fault.armed_at > 15.0:  # no push to main came: the fleet is stuck
            self.end()
            self.missed.append(fault)
            return True
        return False


def is_ancestor(remote: Path, commit: str) -> bool:
    return subprocess.run(["git", "merge-base", "--is-ancestor", commit, "main"], cwd=remote,
                          env=aq_env(), capture_output=True, timeout=60).returncode == 0


def claimed_in(remote: Path, commit: str) -> list[str]:
    """The jobs `commit` moves from the inbox to building."""
    changes = set(git(remote, "diff-tree", "--no-commit-id", "--no-renames", "-r", "--name-status",
                      f"{commit}^", commit, "--", "queue").splitlines())
    return [line.rpartition("/")[2][:-3] for line in changes
            if line.startswith("A\tqueue/building/")
            and f"D\tqueue/inbox/{line.rpartition('/')[2]}" in changes]


@pytest.mark.heavy  # it keeps both cores busy: see tests/conftest.py
def test_chaos_with_the_server_killed_in_the_middle_of_pushes(
        transport: tuple[Fleet, Server]) -> None:
    """Workers killed with kill -9 while the server itself is killed with kill -9 in the middle
    of a push to main (held before its ref moved: it did not land; held after: it landed, and
    the pusher never heard) and brought back, and over HTTPS answers a push 502 before or after
    git took it: every job ends in one final stage, none lost, none run twice under one lease,
    every ambiguous claim that landed run by its own claimer, and every worker exits 0."""
    fleet, server = transport
    kind = "ssh" if isinstance(server, Sshd) else "https"
    ids = [f"job-{n:02d}" for n in range(CHAOS_JOBS)]
    seed = fleet.seed(ids, pause=0.1)
    trap = PushTrap(fleet.remote, fleet.root / "trap")
    clones = [clone_over(fleet, server, f"clone{c}") for c in range(2)]
    slots = [Slot(f"t{c}{k}", clone, env=server.client_env)
             for c, clone in enumerate(clones) for k in range(2)]
    faults = ServerFaults(fleet, seed, ids, server, trap, list(FAULTS[kind]))
    try:
        chaos = run_chaos(fleet, slots, ids, kill_every=(3.0, 5.0), remote_kill_every=None,
                          same_name=0.0, deadline=150, extra=faults, rng=random.Random())
    finally:
        faults.end()

    result = audit(fleet, ids)
    print(f"{kind} chaos: {chaos.worker_kills} workers killed, server faults "
          f"{[(f.kind, f'{f.armed_at:.1f}s') for f in faults.done]}, missed "
          f"{[f.kind for f in faults.missed]}, {len(ids) - CHAOS_JOBS} jobs added; "
          f"{result.figures()}")
    assert sorted(f.kind for f in faults.done) == sorted(FAULTS[kind]), (
        "the run ended before every fault was used: it tested less than it says")
    assert result.problems == [], fleet.tail()
    check_survivors_and_dead_letters(fleet, result, chaos)

    # a push that landed while its pusher heard nothing (or a 5xx) was confirmed by fetching:
    # the claims it carried were run by the worker that made them, under that lease
    for fault in faults.done:
        assert fault.commit is not None
        if not fault.kind.endswith("after"):
            continue
        assert is_ancestor(fleet.remote, fault.commit), f"{fault}: the held push did not land"
        print(f"{fault.kind}: {fault.commit[:10]} claims {claimed_in(fleet.remote, fault.commit)}")
        for job_id in claimed_in(fleet.remote, fault.commit):
            claim = [e for e in result.events[job_id] if e["type"] == "claimed"
                     and e["token"] in git(fleet.remote, "show",
                                           f"{fault.commit}:queue/.events/{job_id}.jsonl")][-1]
            if claim["pid"] not in chaos.survivors():
                continue  # its worker was killed: a take-back is the lifecycle, not a loss
            ends = [(e["by"], e["outcome"]) for e in result.events[job_id]
                    if e["type"] == "finished" and e["token"] == claim["token"]]
            assert ends == [(claim["by"], "ok")], (fault, job_id, ends, fleet.tail())


# --- a remote that asks for credentials -----------------------------------------------------------

@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str
    terminal: str  # what was written to the controlling terminal (a prompt, if any)


def with_a_terminal(args: list[str], cwd: Path, env: dict[str, str], within: float = 60.0) -> Ran:
    """`aq ARGS` with a controlling terminal that nobody types into, as a person runs it: a git
    or ssh allowed to prompt there would wait forever. Stopped (failing the test) after `within`."""
    master, slave = os.openpty()
    prefix = ["setsid", "--ctty"] if shutil.which("setsid") else []
    try:
        proc = subprocess.Popen([*prefix, sys.executable, "-m", "aq", *args], cwd=cwd,
                                env=aq_env(env), stdin=slave, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            out, err = proc.communicate(timeout=within)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"aq {' '.join(args)} still waiting after {within:.0f}s (on a prompt?): "
                        f"terminal {_read(master)!r}, stderr {err[-500:]!r}")
        return Ran(proc.returncode, out, err, _read(master))
    finally:
        os.close(slave)
        os.close(master)


def _read(fd: int) -> str:
    os.set_blocking(fd, False)
    with contextlib.suppress(OSError):
        return os.read(fd, 4096).decode(errors="replace")
    return ""


@pytest.fixture(params=["ssh", "https"])
def locked_out(request: pytest.FixtureRequest,
               tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A clone whose remote wants credentials it does not have, and the environment it runs in:
    HTTPS with Basic auth and no user or password; ssh with a key the server does not know, a
    server that offers password logins, and an ssh command without BatchMode (a person's own)."""
    with Fleet(tmp_path) as fleet:
        fleet.seed(["waiting"])
        if request.param == "ssh":
            server = serve("ssh", fleet, passwords=True)
            assert isinstance(server, Sshd)
            env = {"GIT_SSH_COMMAND": server.ssh_command(keygen(tmp_path / "unknown_key"),
                                                         batch=False)}
        else:
            server = serve("https", fleet, auth="fleet:secret")
            env = server.client_env
        try:
            yield clone_over(fleet, server, "clone"), env
        finally:
            server.kill()


def test_a_remote_that_asks_for_credentials_fails_fast_without_a_prompt(
        locked_out: tuple[Path, dict[str, str]]) -> None:
    """A command that must reach the remote says in one line that it cannot, with git's reason
    (credentials), and exits 1; a worker says so once and exits. Neither waits on a prompt,
    even with a terminal to prompt on."""
    clone, env = locked_out
    reasons = ("terminal prompts disabled", "Permission denied", "Authentication failed")
    added = with_a_terminal(["add", "--body", "echo hi", "--id", "new"], clone, env)
    assert added.returncode == 1, added
    assert added.terminal == "" and added.stdout == "", added
    assert len(added.stderr.strip().splitlines()) == 1 and "Traceback" not in added.stderr, added
    assert "cannot reach the queue's remote 'origin'" in added.stderr, added
    assert any(why in added.stderr for why in reasons), added

    ran = with_a_terminal(["run", "--once", "--worker", "w"], clone, env)
    assert ran.terminal == "" and "Traceback" not in ran.stdout + ran.stderr, ran
    about_the_remote = [line for line in (ran.stdout + ran.stderr).splitlines() if "origin" in line]
    assert len(about_the_remote) == 1, ran
    assert any(why in about_the_remote[0] for why in reasons), ran
    assert "waiting" not in git(clone, "log", "-1", "--format=%s"), "it claimed without the remote"


def test_a_server_answering_503_is_an_unreachable_remote(tmp_path: Path) -> None:
    """An HTTPS remote that answers 503 to everything: a command says in one line that it
    cannot reach the remote and changed nothing; a worker claims nothing and exits."""
    with Fleet(tmp_path) as fleet:
        fleet.seed(["waiting"])
        server = serve("https", fleet)
        assert isinstance(server, HttpGit)
        try:
            clone = clone_over(fleet, server, "clone")
            server.unavailable(True)
            added = with_a_terminal(["add", "--body", "echo hi"], clone, server.client_env)
            assert added.returncode == 1 and len(added.stderr.strip().splitlines()) == 1, added
            ran = with_a_terminal(["run", "--once", "--worker", "w"], clone, server.client_env)
            assert "nothing to run" in ran.stdout and "Traceback" not in ran.stderr, ran
            assert fleet.stages() == {"waiting": ["inbox"]}
        finally:
            server.kill()
