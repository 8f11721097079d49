"""How long a person waits for `aq web`: the board's first byte on a big queue, and a move's
round trip from the click to the page that shows it.

Builds queues of 1,000 and 10,000 jobs (the job files of bench_queue, spread over the stages
with the event logs of bench_views, committed once), pushes each to a local bare remote and
serves a clone of it with a real `python -m aq web --port 0 --every 60` process. Then times
`GET /` over a raw socket (first byte, whole answer, size) beside `python -c pass` and
`aq ls --json` measured in the same rounds, and `POST /jobs/{id}/cancel` followed by `GET /`
until the board shows the job failed. It prints figures and asserts nothing: see
benchmarks/README.md.

    python benchmarks/bench_web.py             # 1,000 and 10,000 jobs, 7 runs, 5 moves each
    python benchmarks/bench_web.py --quick     # 1,000 jobs, 3 runs, 3 moves: a smoke run
    python benchmarks/bench_web.py --profile   # and where board_data + render spend their time
    python benchmarks/bench_web.py --json      # the same figures as JSON on stdout
"""

from __future__ import annotations

import argparse
import cProfile
import http.client
import io
import json
import os
import platform
import pstats
import queue
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench_queue import (  # benchmarks/ is on sys.path when run as a script
    child_env,
    commit_all,
    compile_aq,
    git,
    job_text,
    load_average,
)
from bench_views import HISTORY, job_events, line, plan_jobs

from aq.usecases.setup import init_queue

# Targets from the issue ("Speed"): the board's first byte, median, by queue size; a move seen
# on the page within a second of the click.
BOARD_TARGETS = {1000: 0.15, 10000: 0.5}
MOVE_TARGET = 1.0
EVENTS_PER_JOB = 5  # as bench_views: the logs a month of a fleet leaves
START_WAIT = 120.0  # seconds `aq web` may take to print its address on a busy machine
SEEN_WAIT = 30.0  # seconds a move may take to show on the board before it counts as never
CSRF = re.compile(r'<meta name="aq-csrf" content="([^"]+)"')
ADDRESS = re.compile(r"aq web: serving .* at (http://\S+)")


# --- building a queue -------------------------------------------------------------------------

def build_queue(root: Path, jobs: int, seed: int, now: datetime) -> dict[str, int]:
    """bench_queue's job files in bench_views' stages (mostly shipped and inbox), each with its
    event log, committed once; returns how many jobs each stage got."""
    init_queue(root)
    rng = random.Random(seed)
    plans = plan_jobs(jobs, jobs * EVENTS_PER_JOB, rng)
    logs = root / "queue" / ".events"
    logs.mkdir(parents=True, exist_ok=True)
    start = now - HISTORY
    stages: dict[str, int] = {}
    for index, plan in enumerate(plans):
        added = start + timedelta(seconds=rng.uniform(0, HISTORY.total_seconds() * 0.9))
        log = job_events(plan, added, rng)
        (root / "queue" / plan.stage / f"{plan.id}.md").write_text(job_text(index, rng), encoding="utf-8")
        (logs / f"{plan.id}.jsonl").write_text("".join(line(e) for e in log), encoding="utf-8")
        stages[plan.stage] = stages.get(plan.stage, 0) + 1
    commit_all(root, f"bench: {jobs} jobs over every stage")
    return stages


def fleet_clone(seed: Path, base: Path) -> Path:
    """Push `seed` to a bare remote and clone it, as a machine of a fleet has its queue."""
    remote = base / "remote.git"
    git(base, "init", "-q", "--bare", "-b", "main", str(remote))
    git(seed, "remote", "add", "origin", str(remote))
    git(seed, "push", "-q", "origin", "HEAD:main")
    git(base, "clone", "-q", str(remote), str(base / "clone"))
    return base / "clone"


# --- the server and its answers ---------------------------------------------------------------

class Server:
    """`python -m aq web --port 0 --every 60` in `root`, until `stop`."""

    def __init__(self, root: Path, log: Path) -> None:
        self._errors = open(log, "wb")  # noqa: SIM115 - closed in stop
        start = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "aq", "web", "--port", "0", "--every", "60"], cwd=root,
            env=child_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=self._errors, text=True)
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=_drain, args=(self.process, lines), daemon=True).start()
        self.address = _address(lines, log)
        self.start_s = time.perf_counter() - start
        self.port = int(self.address.rsplit(":", 1)[1].split("/", 1)[0])
        self.host = f"127.0.0.1:{self.port}"  # the Host header a browser sends

    def get(self, path: str = "/") -> Answer:
        """GET `path` as a browser asks for it."""
        return get(self.port, self.host, path)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._errors.close()


def _drain(process: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
    assert process.stdout is not None
    for text in process.stdout:
        lines.put(text)
    lines.put(None)


def _address(lines: queue.Queue[str | None], log: Path) -> str:
    deadline = time.monotonic() + START_WAIT
    while time.monotonic() < deadline:
        try:
            text = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        if text is None:
            break
        found = ADDRESS.search(text)
        if found:
            return found.group(1)
    tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
    raise RuntimeError(f"aq web printed no address: {tail[0]}")


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    first_byte_s: float  # from connect to the first byte of the answer
    whole_s: float  # from connect to the last byte
    body: bytes


def get(port: int, host: str, path: str = "/") -> Answer:
    """One GET over a fresh connection, as a browser's first request is."""
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/html\r\n"
                     "Connection: close\r\n\r\n".encode())
        chunks = [sock.recv(65536)]
        first = time.perf_counter() - start
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    whole = time.perf_counter() - start
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    return Answer(status, first, whole, body)


def post(server: Server, path: str, csrf: str, payload: dict[str, object]) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    try:
        conn.request("POST", path, body=json.dumps(payload),
                     headers={"host": server.host, "content-type": "application/json",
                              "x-aq-csrf": csrf})
        answer = conn.getresponse()
        return answer.status, answer.read().decode("utf-8", "replace")
    finally:
        conn.close()


def column(page: str, stage: str) -> tuple[int, list[str]]:
    """A board column's count and the ids of the cards it shows."""
    start = page.find(f'data-stage="{stage}"')
    if start < 0:
        return -1, []
    end = page.find('<div class="column', start)
    part = page[start:end if end > 0 else len(page)]
    count = re.search(r'<span class="count">(\d+)</span>', part)
    return (int(count.group(1)) if count else -1), re.findall(r'data-job="([^"]+)"', part)


def timed(argv: Sequence[str], cwd: Path) -> tuple[float, int]:
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=child_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start, done.returncode


# --- measuring --------------------------------------------------------------------------------

@dataclass(slots=True)
class Figures:
    jobs: int
    stages: dict[str, int]
    build_s: float
    start_s: float = 0.0  # from starting `aq web` to its address line
    first_s: float = 0.0  # the first GET / after that (the warm-up): whole answer
    first_byte_s: list[float] = field(default_factory=list)
    whole_s: list[float] = field(default_factory=list)
    page_bytes: int = 0
    statuses: list[int] = field(default_factory=list)
    python_s: list[float] = field(default_factory=list)
    ls_s: list[float] = field(default_factory=list)
    ls_failed: int = 0
    post_s: list[float] = field(default_factory=list)  # POST start to its answer
    seen_s: list[float] = field(default_factory=list)  # POST start to the page showing it
    gets: list[int] = field(default_factory=list)  # GET / it took to see each move
    moves_failed: list[str] = field(default_factory=list)


def board_rounds(fig: Figures, server: Server, root: Path, runs: int) -> None:
    """One warm-up, then `runs` rounds of `python -c pass`, `aq ls --json` and `GET /`,
    interleaved so that a noisy moment hits all three."""
    warm = server.get()
    fig.first_s, fig.page_bytes = warm.whole_s, len(warm.body)
    timed((sys.executable, "-c", "pass"), root)
    timed((sys.executable, "-m", "aq", "ls", "--json"), root)
    for _ in range(runs):
        fig.python_s.append(timed((sys.executable, "-c", "pass"), root)[0])
        seconds, code = timed((sys.executable, "-m", "aq", "ls", "--json"), root)
        fig.ls_s.append(seconds)
        fig.ls_failed += code != 0
        answer = server.get()
        fig.first_byte_s.append(answer.first_byte_s)
        fig.whole_s.append(answer.whole_s)
        fig.statuses.append(answer.status)


def move_rounds(fig: Figures, server: Server, moves: int) -> None:
    """Cancel `moves` inbox jobs one by one from the board's inbox column (the first cards, as a
    person sees them); each timed from the POST's start until `GET /` shows it failed: its card
    in the failed column, or (a column shows only its first cards) that column one longer and
    the card gone from the inbox."""
    page = server.get().body.decode("utf-8", "replace")
    csrf = CSRF.search(page)
    if csrf is None:
        fig.moves_failed.append("the board has no aq-csrf meta tag")
        return
    for job in column(page, "inbox")[1][:moves]:
        failed_before = column(page, "failed")[0]
        start = time.perf_counter()
        status, said = post(server, f"/jobs/{job}/cancel", csrf.group(1),
                            {"reason": "bench: cancelled to time the round trip"})
        posted = time.perf_counter() - start
        if status != 200:
            fig.moves_failed.append(f"{job}: {status} {said.strip()[:200]}")
            continue
        for tries in range(1, 10_000):
            page = server.get().body.decode("utf-8", "replace")
            count, shown = column(page, "failed")
            if job in shown or (count == failed_before + 1 and job not in column(page, "inbox")[1]):
                fig.post_s.append(posted)
                fig.seen_s.append(time.perf_counter() - start)
                fig.gets.append(tries)
                break
            if time.perf_counter() - start > SEEN_WAIT:
                fig.moves_failed.append(f"{job}: not on the board {SEEN_WAIT:g} s after the POST")
                break


def measure(base: Path, jobs: int, runs: int, moves: int, seed: int) -> tuple[Figures, Path]:
    seed_root = base / "seed"
    print(f"building a queue of {jobs:,} jobs in {seed_root} ...", file=sys.stderr)
    start = time.perf_counter()
    stages = build_queue(seed_root, jobs, seed, datetime.now(UTC))
    root = fleet_clone(seed_root, base)
    fig = Figures(jobs, stages, build_s=time.perf_counter() - start)
    print(f"  built, pushed and cloned in {fig.build_s:.1f}s; serving it, {runs} runs and "
          f"{moves} moves ...", file=sys.stderr)
    server = Server(root, base / "web.log")
    try:
        fig.start_s = server.start_s
        board_rounds(fig, server, root, runs)
        move_rounds(fig, server, moves)
    finally:
        server.stop()
    return fig, root


def in_process(root: Path, runs: int, profile: bool) -> tuple[dict[str, float], str | None]:
    """`board_data` (50 cards a column, as the page asks) and the board template in this
    process, median of `runs` after one warm-up; with `profile`, cProfile's top functions."""
    from aq.store.queue import Queue
    from aq.ui.board import board_data
    from aq.ui.web.context import PER_STAGE, Web
    from aq.ui.web.render import render

    now = datetime.now(UTC)
    web = Web(root=root, csrf="bench", who="bench via web", clock=lambda: now, every=60.0)

    def page() -> tuple[float, float]:
        queue_ = Queue.locate(str(root))
        start = time.perf_counter()
        data = board_data(queue_, now=now, monotonic=time.monotonic(), shown=PER_STAGE,
                          shipped_shown=PER_STAGE, capabilities=web.capabilities(queue_))
        gathered = time.perf_counter()
        render("board.html", web.page(queue_, board=data, now=now, per_stage=PER_STAGE))
        return gathered - start, time.perf_counter() - gathered

    page()
    split = [page() for _ in range(runs)]
    figures = {"board_data": statistics.median(s[0] for s in split),
               "render board.html": statistics.median(s[1] for s in split)}
    if not profile:
        return figures, None
    profiler = cProfile.Profile()
    profiler.runcall(page)
    return figures, top_functions(profiler)


def profile_move(root: Path) -> str:
    """cProfile of one cancel as `POST /jobs/{id}/cancel` makes it: a fetch, then `move_job`
    (the move, its commit and push, and the post it may owe a tracker item)."""
    from aq.core.lifecycle import Action
    from aq.store.queue import Queue
    from aq.usecases.moves import move_job

    queue_ = Queue.locate(str(root))
    job = min(path.stem for path in (root / "queue" / "inbox").glob("*.md"))

    def cancel() -> None:
        queue_.refresh_from_remote(30.0)
        move_job(queue_, job, Action.CANCEL, who="bench via web", now=datetime.now(UTC),
                 env={}, reason="bench: profiled")
    profiler = cProfile.Profile()
    profiler.runcall(cancel)
    return top_functions(profiler)


def top_functions(profiler: cProfile.Profile, count: int = 25) -> str:
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(count)
    return out.getvalue()


# --- reporting --------------------------------------------------------------------------------

def p90(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


def verdict(median: float, target: float, failed: bool) -> str:
    return "ERR" if failed else ("PASS" if median < target else "MISS")


def render_table(rows: list[Figures], runs: int) -> str:
    head = ("jobs", "what", "median s", "p90 s", "x python", "x ls", "target s", "x target", "")
    body: list[tuple[str, ...]] = [head]
    for f in rows:
        py, ls = statistics.median(f.python_s), statistics.median(f.ls_s)
        bad = any(s != 200 for s in f.statuses)
        target = BOARD_TARGETS.get(f.jobs)

        def row(what: str, values: Sequence[float], target: float | None, failed: bool,
                jobs: int = f.jobs, py: float = py, ls: float = ls) -> tuple[str, ...]:
            med = statistics.median(values)
            return (f"{jobs:,}", what, f"{med:.3f}", f"{p90(values):.3f}", f"{med / py:.1f}",
                    f"{med / ls:.2f}", f"< {target:g}" if target else "-",
                    f"{med / target:.2f}" if target else "-",
                    verdict(med, target, failed) if target else "-")
        body += [row("python -c pass", f.python_s, None, False),
                 row("aq ls --json" + (f" ({f.ls_failed} failed)" if f.ls_failed else ""),
                     f.ls_s, None, False),
                 row("GET / first byte", f.first_byte_s, target, bad),
                 row("GET / whole answer", f.whole_s, None, bad)]
        if f.seen_s:
            body += [row("cancel: POST answered", f.post_s, None, False),
                     row("cancel: seen on GET /", f.seen_s, MOVE_TARGET, bool(f.moves_failed))]
    widths = [max(len(r[i]) for r in body) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i in (1, 8) else c.rjust(w)
                       for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip() for r in body]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for f in rows:
        lines.append(f"\n{f.jobs:,} jobs: " + ", ".join(f"{n} {s}" for s, n in sorted(
            f.stages.items(), key=lambda kv: -kv[1])) + f"; built in {f.build_s:.1f} s; "
            f"`aq web` printed its address in {f.start_s:.2f} s, first GET / (no manifest cache "
            f"yet, as after a fresh clone) {f.first_s:.3f} s; "
            f"board page {f.page_bytes / 1024:.0f} KiB")
        if any(s != 200 for s in f.statuses):
            lines.append(f"  GET / answered {sorted(set(f.statuses))}, not only 200")
        if f.seen_s:
            lines.append(f"  {len(f.seen_s)} cancels, each seen after {', '.join(map(str, f.gets))} GET /")
        lines += [f"  move failed: {why}" for why in f.moves_failed]
    lines.append(f"\nmedian and p90 of {runs} runs after one warm-up (cancels: of each move); "
                 "x python, x ls = median / median of `python -c pass`, of `aq ls --json` in "
                 "the same rounds; x target = median / target.")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=None, help="timed GET / per size (default 7; 3 with --quick)")
    parser.add_argument("--moves", type=int, default=None, help="cancels timed per size (default 5; 3 with --quick)")
    parser.add_argument("--quick", action="store_true", help="1,000 jobs only, 3 runs, 3 moves: a smoke run")
    parser.add_argument("--profile", action="store_true", help="print cProfile's top functions of the biggest board")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    parser.add_argument("--seed", type=int, default=2026, help="seed of the generated queue")
    args = parser.parse_args(argv)
    runs = max(1, args.runs or (3 if args.quick else 7))
    moves = max(1, args.moves or (3 if args.quick else 5))
    compile_aq()
    load_before = load_average()
    rows: list[Figures] = []
    inside: dict[int, dict[str, float]] = {}
    profile: str | None = None
    move_profile: str | None = None
    for jobs in (1000,) if args.quick else (1000, 10000):
        with tempfile.TemporaryDirectory(prefix=f"aq-bench-web-{jobs}-") as tmp:
            fig, root = measure(Path(tmp), jobs, runs, moves, args.seed)
            rows.append(fig)
            inside[jobs], profile = in_process(root, runs, args.profile)
            move_profile = profile_move(root) if args.profile else None
    load = {"before": load_before, "after": load_average()}
    if args.json:
        print(json.dumps({"python": platform.python_version(), "platform": platform.platform(),
                          "cpus": os.cpu_count(), "load_average_1m": load, "runs": runs,
                          "results": [asdict(f) for f in rows],
                          "in_process_s": {str(k): v for k, v in inside.items()}}, indent=2))
        return 0
    print(f"python {platform.python_version()} on {platform.platform()}, {os.cpu_count()} CPUs; "
          f"1-min load average {load['before']} before, {load['after']} after\n")
    print(render_table(rows, runs))
    print("\nin this process, on the same clone after the moves (50 cards a column, as GET / asks):")
    for jobs, split in inside.items():
        print(f"  {jobs:>6,} jobs: " + ", ".join(f"{k} {v:.3f} s" for k, v in split.items()))
    if profile:
        print(f"\ncProfile of one board_data + render, {rows[-1].jobs:,} jobs, by cumulative time:")
        print(profile)
    if move_profile:
        print(f"cProfile of one cancel (fetch + move_job), {rows[-1].jobs:,} jobs, by cumulative time:")
        print(move_profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
