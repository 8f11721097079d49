"""Fleet throughput over each transport a fleet's remote is reached by: file://, git daemon,
ssh (a real sshd on 127.0.0.1, plain and with ssh's connection sharing as a user may set it)
and smart HTTP (`git http-backend` behind an HTTPS server), side by side, with each one's ratio
to file:// measured in the same run (issue 17, "Speed").

Each transport gets the same fleet: a bare remote seeded with N trivial shell jobs (`true`), 3
clones, 6 `aq run --drain` workers (two a clone), run until they exit. The servers are those of
the tests (tests/helpers/servers.py). Every git call the workers make is timed at aq's one
chokepoint (bench_fleet.py's sitecustomize), which gives pushes, lost races and the median
fetch and push of each transport. It prints figures and asserts nothing: see
benchmarks/README.md.

    python benchmarks/bench_transports.py            # 60 jobs a transport (about 5 min)
    python benchmarks/bench_transports.py --quick    # 20 jobs a transport (about 1.5 min)
    python benchmarks/bench_transports.py --only ssh,https
    python benchmarks/bench_transports.py --json     # the same figures as JSON on stdout
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # tests/helpers is not installed with aq: it lives in the checkout
    sys.path.insert(0, str(REPO))

from bench_fleet import (  # noqa: E402 - benchmarks/ is on sys.path as a script
    FleetFigures,
    Hook,
    WorkerRow,
    clone,
    count_pushes,
    fleet_outcome,
    git,
    git_daemon,
    job_text,
    load_average,
    machine,
    make_remote,
    read_git_log,
    run_workers,
    seed_queue,
    table,
)

from tests.helpers.servers import HttpGit, Sshd, Unavailable  # noqa: E402

TRANSPORTS = ("file", "daemon", "ssh", "ssh-mux", "https")
WORKERS, CLONES, POLL = 6, 3, 0.05


@dataclass
class Transported:
    """One transport's run: bench_fleet's figures, and what reaching the remote costs."""

    transport: str
    url: str = ""
    figures: FleetFigures | None = None
    fetch_ms: float | None = None  # median of the workers' fetches
    push_ms: float | None = None  # median of their pushes to main that landed
    ratio_to_file: float | None = None  # jobs/s over file:// jobs/s
    skipped: str | None = None  # why this transport could not run here
    said: list[str] = field(default_factory=list)  # what the workers printed that looks wrong


@contextlib.contextmanager
def served(transport: str, base: Path, remote: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """The remote's URL over `transport`, and the environment git needs to reach it."""
    if transport == "file":
        yield f"file://{remote}", {}
    elif transport == "daemon":
        with git_daemon(base) as url:
            yield url + remote.name, {}
    elif transport.startswith("ssh"):
        with Sshd(base / "sshd") as sshd:
            command = sshd.client_env["GIT_SSH_COMMAND"]
            if transport == "ssh-mux":  # one login per clone, its connection shared by every git
                command += f" -o ControlMaster=auto -o ControlPath={base}/%C -o ControlPersist=30"
            yield sshd.url(remote), {"GIT_SSH_COMMAND": command}
    else:
        with HttpGit(base / "http", base) as http:
            yield http.url(remote), http.client_env


def over(transport: str, base: Path, jobs: int, hook: Hook, timeout: float) -> Transported:
    """Drain `jobs` trivial jobs with the fleet through `transport`."""
    base.mkdir(parents=True)
    out = Transported(transport)
    remote = make_remote(base / "remote.git")
    seed_queue(base / "seed", remote, {f"job-{i:04d}": job_text(f"Trivial job {i}", "true")
                                       for i in range(jobs)})
    fig = FleetFigures(transport, jobs, WORKERS, CLONES, POLL)
    fig.per_worker = [WorkerRow(f"w{i}", i % CLONES) for i in range(WORKERS)]
    log = base / "git-calls.jsonl"
    try:
        with served(transport, base, remote) as (url, env):
            out.url = url
            repos = []
            for i in range(CLONES):  # cloned by path, then pointed at the URL: the same repository
                repos.append(clone(remote, base / f"clone-{i}"))
                git(repos[-1], "remote", "set-url", "origin", url)
            started = time.time()
            fig.wall_s, fig.timed_out, outputs = run_workers(fig.per_worker, repos, POLL,
                                                             hook.env(log, env), base, timeout)
    except Unavailable as why:
        out.skipped = str(why)
        return out
    fleet_outcome(fig, clone(remote, base / "check"),
                  git(base, "--git-dir", str(remote), "rev-list", "--count", "main"))
    calls = [c for c in read_git_log(log) if c.start >= started]
    count_pushes(fig, calls)
    out.figures = fig
    out.fetch_ms = median_ms([c.seconds for c in calls if c.label == "fetch"])
    out.push_ms = median_ms([c.seconds for c in calls if c.main_push and c.rc == 0])
    for name, text in outputs.items():
        out.said += [f"{name}: {line}" for line in text.splitlines()
                     if "could not" in line or "Traceback" in line or line.startswith("aq:")
                     or "does not answer" in line]
    return out


def median_ms(seconds: Sequence[float]) -> float | None:
    return statistics.median(seconds) * 1000 if seconds else None


def render(runs: Sequence[Transported], jobs: int) -> str:
    rows = []
    for run in runs:
        f = run.figures
        if f is None:
            rows.append((run.transport, "skipped", *[""] * 10))
            continue
        per_job = sum(row.calls for row in f.calls) / max(f.finished_jobs, 1)
        rows.append((
            run.transport, f"{f.finished_jobs}/{f.jobs}" + (" (timed out)" if f.timed_out else ""),
            f"{f.first_claim_to_last_finish_s:.1f}" if f.first_claim_to_last_finish_s else "-",
            f"{f.jobs_per_s:.2f}" if f.jobs_per_s else "-",
            f"{run.ratio_to_file:.2f}" if run.ratio_to_file is not None else "-",
            f"{run.fetch_ms:.0f}" if run.fetch_ms is not None else "-",
            f"{run.push_ms:.0f}" if run.push_ms is not None else "-",
            str(f.pushes_ok), str(f.pushes_rejected), str(f.pushes_other_failures),
            str(f.heartbeat_pushes), f"{per_job:.1f}"))
    head = ("remote", "jobs done", "claim..finish s", "jobs/s", "x file://", "fetch ms",
            "push ms", "pushes ok", "rejected", "other fail", "heartbeats", "git calls/job")
    out = [f"fleet throughput by transport: {WORKERS} workers (`aq run --drain --poll {POLL:g}`) "
           f"over {CLONES} clones, {jobs} jobs of `true` each", table(head, rows),
           "x file:// = jobs/s over file://'s in this run; fetch ms, push ms = medians of the "
           "workers' fetches and of their pushes to main that landed."]
    for run in runs:
        if run.skipped:
            out.append(f"{run.transport}: skipped: {run.skipped}")
            continue
        f = run.figures
        assert f is not None
        claims = sorted(row.claims for row in f.per_worker)
        out.append(f"{run.transport} ({run.url}): stages {f.stages}; claims per worker "
                   f"{claims}; rejections {f.rejected_why or 'none'}")
        out += [f"  worker said: {line}" for line in run.said[:5]]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 jobs a transport: a smoke run")
    parser.add_argument("--jobs", type=int, default=None,
                        help="jobs a transport (default 60; 20 with --quick)")
    parser.add_argument("--only", default=",".join(TRANSPORTS),
                        help=f"transports, comma-separated (default {','.join(TRANSPORTS)}); "
                             "file is always run, as the baseline")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    args = parser.parse_args(argv)
    jobs = max(1, args.jobs or (20 if args.quick else 60))
    chosen = ["file", *[t for t in TRANSPORTS[1:] if t in args.only.split(",")]]
    timeout = 90.0 if args.quick else 180.0
    load: dict[str, float | None] = {"start": load_average()}
    runs: list[Transported] = []
    with tempfile.TemporaryDirectory(prefix="aq-bench-transports-") as tmp:
        hook = Hook(Path(tmp))
        for transport in chosen:
            print(f"{transport}: {jobs} jobs, {WORKERS} workers ... (load {load_average()})",
                  file=sys.stderr, flush=True)
            runs.append(over(transport, Path(tmp) / transport, jobs, hook, timeout))
            load[f"after_{transport}"] = load_average()
    base = runs[0].figures.jobs_per_s if runs[0].figures else None
    for run in runs:
        if run.figures and run.figures.jobs_per_s and base:
            run.ratio_to_file = run.figures.jobs_per_s / base
    if args.json:
        print(json.dumps({"machine": machine(), "load_average_1m": load, "jobs": jobs,
                          "runs": [asdict(run) for run in runs]}, indent=2, default=str))
        return 0
    info = machine()
    print(f"python {info['python']}, {info['git']} on {info['platform']}, {info['cpus']} CPUs; "
          "1-min load average: " + ", ".join(f"{k} {v}" for k, v in load.items()) + "\n")
    print(render(runs, jobs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
