"""A fleet of 50 workers on a remote 100 ms away: jobs and pushes a minute, lost races per job
and how evenly the claims spread, beside the same fleet with no added delay (issue 17, "Speed").

`git daemon` (push enabled) serves the queue's bare remote behind a TCP proxy in this process
that holds every chunk `--delay-ms` each way (default 50: a 100 ms round trip), so each fetch
and push of the workers pays a real round trip per exchange. N `aq run --drain` workers (default
50, spread over 10 clones) drain J shell jobs that sleep a few seconds. The same fleet runs twice
in one go: through the proxy with no delay (the baseline), then with it. Every git call of the
workers is timed at aq's one chokepoint (bench_fleet.py's sitecustomize); claims per worker are
read from the `claimed` events on the remote. It prints figures and asserts nothing: see
benchmarks/README.md.

    python benchmarks/bench_scale.py             # 50 workers, 10 clones, 100 jobs of 3 s
    python benchmarks/bench_scale.py --quick     # 12 workers, 4 clones, 30 jobs of 1 s
    python benchmarks/bench_scale.py --workers 30 --jobs 60 --delay-ms 100
    python benchmarks/bench_scale.py --json      # the same figures as JSON on stdout
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # tests/helpers is not installed with aq: it lives in the checkout
    sys.path.insert(0, str(REPO))

from bench_fleet import (  # noqa: E402 - benchmarks/ is on sys.path as a script
    FleetFigures,
    GitCall,
    Hook,
    WorkerRow,
    aq_argv,
    child_env,
    clone,
    fleet_calls,
    fleet_outcome,
    git,
    job_text,
    load_average,
    machine,
    make_remote,
    read_git_log,
    run_workers,
    seed_queue,
    table,
)
from bench_transports import median_ms  # noqa: E402

from aq.store.queue import Queue  # noqa: E402
from tests.helpers.servers import Server  # noqa: E402

POLL = 1.0
HEARTBEAT = "push --force (heartbeat)"  # bench_fleet's GitCall.label of a heartbeat push


# --- the remote: git daemon behind a delaying proxy --------------------------------------------

class GitDaemon(Server):
    """`git daemon` serving every repository under `root`, push enabled, with no cap on
    connections (its default of 32 would turn a fleet of 50 into refused fetches)."""

    name = "git-daemon"

    def __init__(self, folder: Path, root: Path) -> None:
        super().__init__(folder)
        self.root = root

    def argv(self) -> list[str]:
        return ["git", "daemon", "--reuseaddr", f"--base-path={self.root}", "--export-all",
                "--enable=receive-pack", "--max-connections=0", "--listen=127.0.0.1",
                f"--port={self.port}", str(self.root)]


class DelayProxy:
    """A TCP proxy on 127.0.0.1 in front of port `upstream` that delivers every chunk `delay`
    seconds after it arrived, each way, in order, without limiting the rate: a remote `2 x delay`
    away. A new connection's first bytes wait one round trip more, as TCP's handshake costs.
    It runs its own event loop in a thread of this process."""

    def __init__(self, upstream: int, delay: float) -> None:
        self.upstream = upstream
        self.delay = delay
        self.port = 0
        self.connections = 0
        self.bytes = 0
        self.left_open = 0  # connections still open when the proxy stopped: stalled ones
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._open: set[asyncio.Task[None]] = set()  # asyncio holds a handler only weakly
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True,
                                        name="delay-proxy")

    def __enter__(self) -> DelayProxy:
        self._thread.start()
        if not self._ready.wait(10) or not self.port:
            raise RuntimeError("the delaying proxy did not start")
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._thread.is_alive() and self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = int(server.sockets[0].getsockname()[1])
        self._ready.set()
        async with server:
            await self._stop.wait()
        self.left_open = len(self._open)
        for task in self._open:
            task.cancel()
        await asyncio.gather(*self._open, return_exceptions=True)

    def stop(self) -> int:
        """Stop now; how many connections were still open (with no git left: stalled)."""
        self.__exit__(None, None, None)
        return self.left_open

    async def _connection(self, client_in: asyncio.StreamReader,
                          client_out: asyncio.StreamWriter) -> None:
        self.connections += 1
        me = asyncio.current_task()
        if me is not None:
            self._open.add(me)
            me.add_done_callback(self._open.discard)
        handshake = asyncio.get_running_loop().time() + 2 * self.delay
        try:
            server_in, server_out = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            client_out.close()
            return
        pipes = [asyncio.create_task(self._pipe(client_in, server_out, handshake)),
                 asyncio.create_task(self._pipe(server_in, client_out, 0.0))]
        try:
            done, pending = await asyncio.wait(pipes, return_when=asyncio.FIRST_EXCEPTION)
            for task in pending:  # one side failed: the connection is over
                task.cancel()
            for task in done:
                task.exception()  # retrieved: a reset peer is how connections end too
        except asyncio.CancelledError:  # the proxy stops: Python 3.11's streams would log it
            for task in pipes:
                task.cancel()
        finally:
            for writer in (client_out, server_out):
                writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    not_before: float) -> None:
        """Read chunks as they come; deliver each `delay` later (b"": the end, passed on)."""
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, chunk = await chunks.get()
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                if not chunk:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(chunk)
                await writer.drain()

        delivering = asyncio.create_task(deliver())
        try:
            while True:
                chunk = await reader.read(1 << 16)
                self.bytes += len(chunk)
                chunks.put_nowait((max(loop.time(), not_before) + self.delay, chunk))
                if not chunk:
                    break
            await delivering
        finally:
            delivering.cancel()


# --- memory ------------------------------------------------------------------------------------

class PeakRss:
    """The peak, sampled each second, of the summed resident memory of this process's
    descendants: the workers, the git they run, their jobs, git daemon (Linux /proc only)."""

    def __init__(self) -> None:
        self.peak_mib: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="peak-rss")

    def __enter__(self) -> PeakRss:
        if Path("/proc/self/status").exists():
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _watch(self) -> None:
        me = str(Path("/proc/self").resolve().name)
        while not self._stop.wait(1.0):
            parent, rss_kib = {}, {}
            for status in Path("/proc").glob("[0-9]*/status"):
                with contextlib.suppress(OSError, ValueError):
                    fields = dict(line.split(":", 1) for line in status.read_text().splitlines()
                                  if line.startswith(("PPid:", "VmRSS:")))
                    parent[status.parent.name] = fields["PPid"].strip()
                    rss_kib[status.parent.name] = int(fields.get("VmRSS", "0 kB").split()[0])
            total = sum(rss_kib[pid] for pid in parent if descends(pid, me, parent))
            self.peak_mib = max(self.peak_mib or 0.0, total / 1024)


def descends(pid: str, ancestor: str, parent: dict[str, str]) -> bool:
    seen = set()
    while pid in parent and pid not in seen:
        seen.add(pid)
        pid = parent[pid]
        if pid == ancestor:
            return True
    return False


# --- one fleet ---------------------------------------------------------------------------------

@dataclass
class ScaleRun:
    label: str
    one_way_ms: float
    figures: FleetFigures
    jobs_per_min: float | None = None
    main_pushes_per_min: float | None = None  # pushes of the queue's branch tried, per minute
    heartbeats_per_min: float | None = None
    busiest_minute: int = 0  # most pushes of the branch tried in any 60 s
    pushes_per_job: float | None = None  # landed pushes of the branch per finished job
    rejected_per_job: float | None = None
    claims: dict[str, float] = field(default_factory=dict)  # per worker: min, median, max
    zero_claims: int = 0  # workers that never won a claim
    lottery_zero: float | None = None  # workers a fair lottery of the same claims leaves with none
    fetch_ms: float | None = None
    push_ms: float | None = None
    slowest_s: float | None = None  # the longest fetch or push: a stalled connection shows here
    connections: int = 0  # git connections through the proxy
    left_open: int = 0  # of them, still open once every git had exited
    peak_rss_mib: float | None = None
    load_start: float | None = None
    load_end: float | None = None
    aq_stats: dict[str, Any] | None = None  # `aq stats --json`'s "pushes"
    said: dict[str, int] = field(default_factory=dict)  # unusual worker lines -> how many


def fleet(base: Path, label: str, delay: float, args: argparse.Namespace, hook: Hook) -> ScaleRun:
    """Drain `args.jobs` sleeping jobs with `args.workers` workers over `args.clones` clones,
    through git daemon behind a proxy adding `delay` seconds each way."""
    base.mkdir(parents=True)
    remote = make_remote(base / "remote.git")
    sleeper = f"sleep {args.job_seconds:g}"
    seed_queue(base / "seed", remote,
               {f"job-{i:04d}": job_text(f"Sleep {i}", sleeper) for i in range(args.jobs)},
               {"lease_ttl": f"{args.lease_ttl:g}s"})
    fig = FleetFigures(label, args.jobs, args.workers, args.clones, POLL)
    fig.per_worker = [WorkerRow(f"w{i:02d}", i % args.clones) for i in range(args.workers)]
    run = ScaleRun(label, delay * 1000, fig, load_start=load_average())
    log = base / "git-calls.jsonl"
    with (GitDaemon(base / "daemon", base) as daemon, DelayProxy(daemon.port, delay) as proxy,
          PeakRss() as rss):
        repos = []
        for i in range(args.clones):  # cloned by path, then pointed at the proxy: one repository
            repos.append(clone(remote, base / f"clone-{i}"))
            git(repos[-1], "remote", "set-url", "origin", f"git://127.0.0.1:{proxy.port}/remote.git")
        started = time.time()
        fig.wall_s, fig.timed_out, outputs = run_workers(fig.per_worker, repos, POLL, hook.env(log),
                                                         base, args.timeout)
        run.load_end, run.connections, run.peak_rss_mib = load_average(), proxy.connections, rss.peak_mib
        run.aq_stats = aq_pushes(repos[0])
        run.left_open = proxy.stop()
    fleet_outcome(fig, clone(remote, base / "check"),
                  git(base, "--git-dir", str(remote), "rev-list", "--count", "main"))
    calls = [c for c in read_git_log(log) if c.start >= started]
    fleet_calls(fig, calls)
    rates(run, calls)
    run.said = dict(Counter(said_line(line) for text in outputs.values()
                            for line in text.splitlines() if unusual(line)).most_common())
    return run


def aq_pushes(repo: Path) -> dict[str, Any] | None:
    """`aq stats --json`'s "pushes" in a worker's clone, after fetching the branch and every
    machine's last heartbeat (their push counts) with aq's own fetch."""
    remote = Queue(repo).remote
    if remote is None or not remote.fetch():
        return None
    git(repo, "reset", "-q", "--hard", remote.tracking)
    done = subprocess.run(aq_argv("stats", "--json"), cwd=repo, env=child_env(), text=True,
                          stdin=subprocess.DEVNULL, capture_output=True, check=False)
    with contextlib.suppress(ValueError):
        pushes = json.loads(done.stdout).get("pushes")
        return pushes if isinstance(pushes, dict) else None
    return None


def rates(run: ScaleRun, calls: Sequence[GitCall]) -> None:
    """Per minute of the span from the first claim to the last finish; per finished job; and
    claims per worker, from the `claimed` events (bench_fleet's fleet_outcome)."""
    fig = run.figures
    tried = sorted(c.start for c in calls if c.main_push)
    beats = sum(1 for c in calls if c.label == HEARTBEAT)
    span = fig.first_claim_to_last_finish_s
    if span:
        run.jobs_per_min = fig.finished_jobs / span * 60
        run.main_pushes_per_min = len(tried) / span * 60
        run.heartbeats_per_min = beats / span * 60
    run.busiest_minute = max((bisect.bisect_left(tried, t + 60) - i for i, t in enumerate(tried)),
                             default=0)
    if fig.finished_jobs:
        run.pushes_per_job = fig.pushes_ok / fig.finished_jobs
        run.rejected_per_job = fig.pushes_rejected / fig.finished_jobs
    claims = sorted(row.claims for row in fig.per_worker)
    run.claims = {"min": claims[0], "median": statistics.median(claims), "max": claims[-1]}
    run.zero_claims = sum(1 for n in claims if n == 0)
    # each claim drawn evenly among all the workers: W * (1 - 1/W)^claims of them get none
    # (a floor for fairness to measure against, not a goal: with as many jobs as twice the
    # workers, a perfectly fair draw still leaves several without a claim)
    run.lottery_zero = len(claims) * (1 - 1 / len(claims)) ** sum(claims) if claims else None
    run.fetch_ms = median_ms([c.seconds for c in calls if c.label == "fetch"])
    run.push_ms = median_ms([c.seconds for c in calls if c.main_push and c.rc == 0])
    run.slowest_s = max((c.seconds for c in calls if c.label in ("fetch", "push", HEARTBEAT)),
                        default=None)


def unusual(line: str) -> bool:
    """A worker's line other than its everyday ones (a claim, a result's move, an empty queue,
    the drain's closing count)."""
    rest = line.partition(": ")[2] or line
    return bool(line.strip()) and not (rest.startswith(("claimed ", "nothing to run"))
                                       or " -> " in rest or re.match(r"\d+ claimed, ", rest))


def said_line(line: str) -> str:
    """The line without its worker's name and job ids, so the same words from many count once."""
    rest = line.partition(": ")[2] or line
    return " ".join("job-*" if word.strip(":,.()").startswith("job-") else word
                    for word in rest.split())[:160]


# --- reporting ---------------------------------------------------------------------------------

def num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def ratio(slow: float | None, fast: float | None) -> str:
    return f"{slow / fast:.2f}" if slow is not None and fast else "-"


def rows_of(run: ScaleRun) -> list[tuple[str, float | None, str]]:
    """(figure, value for the ratio, as printed) for one run, in the order of the table."""
    f = run.figures
    stats = run.aq_stats or {}
    done = f"{f.finished_jobs}/{f.jobs}" + (" (timed out)" if f.timed_out else "")
    claims = run.claims
    return [
        ("jobs done", f.finished_jobs, done),
        ("wall s (start to last exit)", f.wall_s, num(f.wall_s)),
        ("first claim..last finish s", f.first_claim_to_last_finish_s, num(f.first_claim_to_last_finish_s)),
        ("jobs/min", run.jobs_per_min, num(run.jobs_per_min)),
        ("branch pushes/min (tried)", run.main_pushes_per_min, num(run.main_pushes_per_min)),
        ("busiest 60 s of branch pushes", run.busiest_minute, str(run.busiest_minute)),
        ("heartbeat pushes/min", run.heartbeats_per_min, num(run.heartbeats_per_min)),
        ("branch pushes landed", f.pushes_ok, str(f.pushes_ok)),
        ("  per job", run.pushes_per_job, num(run.pushes_per_job, 2)),
        ("rejected pushes (lost races)", f.pushes_rejected, str(f.pushes_rejected)),
        ("  per job", run.rejected_per_job, num(run.rejected_per_job, 2)),
        ("refused / other failed pushes", f.pushes_other_failures, str(f.pushes_other_failures)),
        ("heartbeat pushes", f.heartbeat_pushes, str(f.heartbeat_pushes)),
        ("fetch ms (median)", run.fetch_ms, num(run.fetch_ms, 0)),
        ("landed push ms (median)", run.push_ms, num(run.push_ms, 0)),
        ("slowest fetch or push s", run.slowest_s, num(run.slowest_s, 2)),
        ("window ms (fetch..landed push)", f.window_ms, num(f.window_ms, 0)),
        ("ceiling jobs/min", (f.ceiling_jobs_per_s or 0) * 60 or None,
         num((f.ceiling_jobs_per_s or 0) * 60 or None)),
        ("claims (events)", f.claims, str(f.claims)),
        ("claims per worker min", claims.get("min"), num(claims.get("min"), 0)),
        ("claims per worker median", claims.get("median"), num(claims.get("median"))),
        ("claims per worker max", claims.get("max"), num(claims.get("max"), 0)),
        ("workers with zero claims", run.zero_claims, str(run.zero_claims)),
        ("  the same, a fair lottery", run.lottery_zero, num(run.lottery_zero, 1)),
        ("git connections (proxy)", run.connections, str(run.connections)),
        ("  left open at the end", run.left_open, str(run.left_open)),
        ("peak RSS MiB (all children)", run.peak_rss_mib, num(run.peak_rss_mib, 0)),
        ("load average 1m start", None, num(run.load_start, 2)),
        ("load average 1m end", None, num(run.load_end, 2)),
        ("aq stats: pushes a job", stats.get("per_job"), num(stats.get("per_job"), 2)),
        ("aq stats: rejected a job", stats.get("rejected_per_job"), num(stats.get("rejected_per_job"), 2)),
        ("aq stats: pushes / rejected / refused", None,
         f"{stats.get('pushes', '-')} / {stats.get('rejected', '-')} / {stats.get('refused', '-')}"),
        ("aq stats: heartbeats (an hour)", stats.get("heartbeats"),
         f"{stats.get('heartbeats', '-')} ({num(stats.get('heartbeats_per_hour'), 0)})"),
        ("aq stats: machines, attempts", None, f"{stats.get('machines', '-')}, {stats.get('attempts', '-')}"),
    ]


def render(base: ScaleRun, slow: ScaleRun, args: argparse.Namespace) -> str:
    rows = [(name, shown, slow_shown, ratio(slow_value, value))
            for (name, value, shown), (_, slow_value, slow_shown)
            in zip(rows_of(base), rows_of(slow), strict=True)]
    out = [f"{args.workers} workers (`aq run --drain --poll {POLL:g}`, lease_ttl {args.lease_ttl:g}s) "
           f"over {args.clones} clones, {args.jobs} jobs of `sleep {args.job_seconds:g}`, through "
           f"git daemon behind a proxy adding {slow.one_way_ms:g} ms each way",
           table(("figure", "no delay", f"+{2 * slow.one_way_ms:g} ms RTT", "ratio"), rows),
           "per minute: of the span from the first claim to the last finish (every push of the "
           "run counted); ratio: the delayed run over the baseline; window, ceiling: as in "
           "bench_fleet.py (b)."]
    for run in (base, slow):
        f = run.figures
        claims = sorted((row.claims for row in f.per_worker), reverse=True)
        out += [f"\n{run.label}: stages {f.stages}; rejections {f.rejected_why or 'none'}",
                f"  claims per worker, most first: {claims}"]
        out += [f"  worker said ({n}x): {line}" for line, n in list(run.said.items())[:6]]
    return "\n".join(out)


# --- main --------------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="12 workers, 4 clones, 30 jobs of 1 s: a smoke run")
    parser.add_argument("--workers", type=int, default=None, help="workers (default 50; 12 with --quick)")
    parser.add_argument("--clones", type=int, default=None, help="clones they share (default 10; 4 with --quick)")
    parser.add_argument("--jobs", type=int, default=None, help="jobs (default 100; 30 with --quick)")
    parser.add_argument("--job-seconds", type=float, default=None,
                        help="each job's `sleep` (default 3; 1 with --quick)")
    parser.add_argument("--delay-ms", type=float, default=50.0,
                        help="delay added each way (default 50: a 100 ms round trip)")
    parser.add_argument("--lease-ttl", type=float, default=60.0, help="aq.yaml lease_ttl, seconds (default 60)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="stop a run's workers after this many seconds (default 600; 180 with --quick)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    args = parser.parse_args(argv)
    args.workers = max(1, args.workers or (12 if args.quick else 50))
    args.clones = max(1, min(args.workers, args.clones or (4 if args.quick else 10)))
    args.jobs = max(1, args.jobs or (30 if args.quick else 100))
    args.job_seconds = args.job_seconds if args.job_seconds is not None else (1.0 if args.quick else 3.0)
    args.timeout = args.timeout or (180.0 if args.quick else 600.0)
    load: dict[str, float | None] = {"start": load_average()}
    runs = []
    with tempfile.TemporaryDirectory(prefix="aq-bench-scale-") as tmp:
        hook = Hook(Path(tmp))
        for label, delay in (("no delay", 0.0), (f"+{2 * args.delay_ms:g} ms RTT", args.delay_ms / 1000)):
            print(f"{label}: {args.workers} workers, {args.jobs} jobs ... (load {load_average()})",
                  file=sys.stderr, flush=True)
            runs.append(fleet(Path(tmp) / f"delay-{delay * 1000:g}ms", label, delay, args, hook))
            load[f"after {label}"] = load_average()
    if args.json:
        print(json.dumps({"machine": machine(), "load_average_1m": load,
                          "settings": {k: v for k, v in vars(args).items() if k != "json"},
                          "runs": [asdict(run) for run in runs]}, indent=2, default=str))
        return 0
    info = machine()
    print(f"python {info['python']}, {info['git']} on {info['platform']}, {info['cpus']} CPUs; "
          "1-min load average: " + ", ".join(f"{k} {v}" for k, v in load.items()) + "\n")
    print(render(runs[0], runs[1], args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
