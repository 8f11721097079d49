"""The drawings of `aq web` as geometry: the DAG's layered layout and bar charts. The templates
draw them as inline SVG, so every label reaches the page through the template's escaping; no
script library, nothing fetched.

The DAG's layout is the plain layered one: a job's column is the longest chain of deps under it
(a cycle, which `aq lint` reports, is cut where it closes), and a column's jobs are ordered by
the mean row of their deps, so that edges mostly run straight.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

N = TypeVar("N", int, float)  # what a bar counts: jobs shipped, dollars spent

NODE_W, NODE_H = 190.0, 40.0  # a job's box
COLUMN, ROW = 250.0, 52.0  # the pitch of columns and rows
MARGIN = 12.0


@dataclass(frozen=True, slots=True)
class Node:
    id: str
    stage: str | None  # None: a dep that names no job in the queue
    title: str
    x: float
    y: float


@dataclass(frozen=True, slots=True)
class Edge:
    dep: str
    job: str
    blocked: bool  # the dep is not in testing or shipped yet: the job waits on it
    path: str  # SVG path data, from the dep's right side to the job's left side


@dataclass(frozen=True, slots=True)
class Graph:
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    width: float
    height: float


def layered(nodes: dict[str, tuple[str | None, str]], links: Sequence[tuple[str, str, bool]],
            rank: dict[str, tuple[int, ...]]) -> Graph:
    """Place `nodes` (id -> (stage, title)) joined by `links` (dep, job, blocked); `rank` orders
    the first column and breaks ties (smaller first)."""
    deps_of: dict[str, list[str]] = defaultdict(list)
    for dep, job, _ in links:
        deps_of[job].append(dep)
    depth = _depths(list(nodes), links)
    columns: dict[int, list[str]] = defaultdict(list)
    for name in nodes:
        columns[depth[name]].append(name)
    row: dict[str, float] = {}
    for number in sorted(columns):
        def key(name: str) -> tuple[float, tuple[int, ...], str]:
            above = [row[d] for d in deps_of[name] if d in row]
            return (sum(above) / len(above) if above else math.inf, rank.get(name, ()), name)
        for index, name in enumerate(sorted(columns[number], key=key)):
            row[name] = index
    placed = {name: (MARGIN + depth[name] * COLUMN, MARGIN + row[name] * ROW) for name in nodes}
    drawn = tuple(Node(name, stage, title, *placed[name]) for name, (stage, title) in nodes.items())
    edges = tuple(Edge(dep, job, blocked, _curve(placed[dep], placed[job]))
                  for dep, job, blocked in links)
    tallest = max((len(names) for names in columns.values()), default=0)
    return Graph(drawn, edges, width=2 * MARGIN + max(columns, default=0) * COLUMN + NODE_W,
                 height=2 * MARGIN + max(0, tallest - 1) * ROW + NODE_H)


def _depths(names: list[str], links: Sequence[tuple[str, str, bool]]) -> dict[str, int]:
    """The longest chain of deps under each node (Kahn's order; a node on a cycle goes one
    column past the deps placed before the cycle). A node with no deps sits just before the
    first job that needs it, so that its edges do not run across other columns' boxes."""
    after: dict[str, list[str]] = defaultdict(list)
    waiting = dict.fromkeys(names, 0)
    for dep, job, _ in links:
        after[dep].append(job)
        waiting[job] += 1
    depth = dict.fromkeys(names, 0)
    ready = [name for name in names if not waiting[name]]
    while ready:
        name = ready.pop()
        for job in after[name]:
            depth[job] = max(depth[job], depth[name] + 1)
            waiting[job] -= 1
            if not waiting[job]:
                ready.append(job)
    needing = {job for _, job, _ in links}
    for name in names:
        if after[name] and name not in needing:
            depth[name] = max(0, min(depth[job] for job in after[name]) - 1)
    return depth


def _curve(start: tuple[float, float], end: tuple[float, float]) -> str:
    x1, y1 = start[0] + NODE_W, start[1] + NODE_H / 2
    x2, y2 = end[0], end[1] + NODE_H / 2
    bend = max(40.0, abs(x2 - x1) / 2)
    return f"M{x1:.0f},{y1:.0f} C{x1 + bend:.0f},{y1:.0f} {x2 - bend:.0f},{y2:.0f} {x2:.0f},{y2:.0f}"


# --- bar charts ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Bar:
    label: str  # what the bar counts: a day, an engine
    text: str  # its value as shown
    x: float
    y: float
    width: float
    height: float
    labelled: bool = True  # its label is written under it (a long run of days: a few are)


@dataclass(frozen=True, slots=True)
class Chart:
    bars: tuple[Bar, ...]
    width: float
    height: float
    top: str  # the largest value, at the top of the value axis, as shown
    axis_x: float  # x of the axis the bars stand on (horizontal bars) or of the value axis
    axis_y: float  # y of the axis the bars stand on (vertical bars) or the bars' bottom
    top_y: float = 0.0  # y of the tallest vertical bar's top


PLOT_H = 150.0  # height of a column chart's bars at most
LEFT, FOOT, HEAD = 44.0, 34.0, 18.0  # room for the value axis, the labels, the values on top
MOST_COLUMNS = 60  # more days than this: a bar per few days


def per_bucket(days: Sequence[tuple[str, N]], most: int = MOST_COLUMNS
               ) -> tuple[list[tuple[str, N]], int]:
    """(first day, sum) per bar and days per bar, so that at most `most` bars are drawn; the
    newest bars hold whole buckets, the oldest one what is left."""
    per = max(1, math.ceil(len(days) / max(1, most)))
    lead = len(days) % per
    cuts: list[int] = ([0] if lead else []) + list(range(lead, len(days), per))
    ends = [*cuts[1:], len(days)]
    sums = [(days[a][0], sum((count for _, count in days[a + 1:b]), days[a][1]))
            for a, b in zip(cuts, ends, strict=True)]
    return sums, per


def columns(values: Sequence[tuple[str, float]], texts: Sequence[str], *, every: int = 1
            ) -> Chart:
    """Vertical bars, one per value, scaled to the largest; `every`: label one bar in so many
    (0: pick, so that about eight are labelled)."""
    count = len(values)
    pitch = 28.0 if count <= 30 else 14.0
    top = max((value for _, value in values), default=0.0)
    every = every or max(1, math.ceil(count / 8))
    bars = []
    for index, ((label, value), text) in enumerate(zip(values, texts, strict=True)):
        height = PLOT_H * value / top if top > 0 else 0.0
        bars.append(Bar(label, text, LEFT + index * pitch + 2, HEAD + PLOT_H - height,
                        pitch - 4, height, index % every == 0 or index == count - 1))
    return Chart(tuple(bars), width=max(LEFT + count * pitch + 40, 260.0), height=HEAD + PLOT_H + FOOT,
                 top=_number(top), axis_x=LEFT - 2, axis_y=HEAD + PLOT_H, top_y=HEAD)


LABEL_W, BAR_W, ROW_H = 150.0, 360.0, 24.0  # horizontal bars: names, the longest bar, a row


def rows(values: Sequence[tuple[str, float]], texts: Sequence[str]) -> Chart:
    """Horizontal bars, one per named value, scaled to the largest."""
    top = max((value for _, value in values), default=0.0)
    bars = tuple(Bar(label, text, LABEL_W, 4 + index * ROW_H, BAR_W * value / top if top > 0 else 0.0,
                     ROW_H - 8)
                 for index, ((label, value), text) in enumerate(zip(values, texts, strict=True)))
    return Chart(bars, width=LABEL_W + BAR_W + 90, height=8 + len(values) * ROW_H + 20,
                 top=_number(top), axis_x=LABEL_W, axis_y=4 + len(values) * ROW_H)


def _number(value: float) -> str:
    if value <= 0:
        return ""  # nothing to scale: the axis says 0 once
    return f"{value:,.0f}" if value == int(value) else f"{value:,.2f}"
