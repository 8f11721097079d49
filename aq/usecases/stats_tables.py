"""`aq stats` for a person: the figures of a `Stats` as tables, a sparkline and bars (rich)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from aq.core.durations import format_duration
from aq.usecases.stats import Breakdown, Stats, rate_of

if TYPE_CHECKING:
    from rich.console import JustifyMethod


SPARKS = "▁▂▃▄▅▆▇█"
EIGHTHS = " ▏▎▍▌▋▊▉"


def sparkline(counts: list[int]) -> str:
    """One block per count: ▁ for none, ▂ to █ scaled to the largest (so 1 never looks like 0)."""
    top = max(counts, default=0)
    if top <= 0:
        return SPARKS[0] * len(counts)
    return "".join(SPARKS[0] if c <= 0 else SPARKS[1 + round((len(SPARKS) - 2) * c / top)]
                   for c in counts)


def bar(share: float, cells: int) -> str:
    """A horizontal bar `cells` wide at most, in eighths of a cell."""
    eighths = round(max(0.0, min(1.0, share)) * cells * 8)
    full, part = divmod(eighths, 8)
    return "█" * full + (EIGHTHS[part] if part else "")


def _buckets(days: tuple[tuple[str, int], ...], room: int) -> tuple[list[int], int]:
    """Counts per bar and days per bar, so that at most `room` bars are drawn (newest kept whole)."""
    counts = [count for _, count in days]
    per = max(1, math.ceil(len(counts) / max(1, room)))
    if per == 1:
        return counts, 1
    lead = len(counts) % per
    groups = ([counts[:lead]] if lead else []) + [counts[i:i + per] for i in range(lead, len(counts), per)]
    return [sum(group) for group in groups], per


def _seconds(value: float | None) -> str:
    """`-`, `40ms`, `2.5s`, `12m`, `3h05m`: a time as a person reads it."""
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f}ms"

    return format_duration(value)


def _usd(amount: float | None) -> str:
    return "-" if amount is None else f"${amount:,.2f}" if amount >= 1 else f"${amount:.4f}"


def _tokens(count: int | None) -> str:
    return "-" if count is None else f"{count:,}"


def _percent(rate: float | None) -> str:
    if rate is None:
        return "-"
    return "<1%" if 0 < rate < 0.005 else f"{rate * 100:.0f}%"


def stats_text(stats: Stats, *, width: int, color: bool) -> str:
    """Tables for a person: stages, shipped per day as a sparkline, flow times and rates, then
    workers, profiles and engines. No escape codes unless `color`."""
    from io import StringIO

    from rich.console import Console

    out = StringIO()
    console = Console(file=out, width=width, color_system="standard" if color else None,
                      force_terminal=color, no_color=not color, highlight=False, emoji=False,
                      markup=False, legacy_windows=False)
    for number, block in enumerate(_blocks(stats, width, color)):
        if number > 1:
            console.print()
        console.print(block)
    return out.getvalue().rstrip("\n") + "\n"


def _blocks(stats: Stats, width: int, color: bool) -> list[Any]:
    from rich.text import Text

    accent = "cyan" if color else ""
    start = stats.since[:16].replace("T", " ") if stats.since else None
    length = _seconds(stats.window_seconds)
    title = (f"aq stats: the last {length} (since {start} UTC), {stats.events:,} events" if start
             else f"aq stats: all history ({length}), {stats.events:,} events")
    blocks: list[Any] = [Text(title, style="bold" if color else "")]
    blocks.append(_stage_table(stats, accent))
    blocks.append(_shipped_block(stats, width, accent))
    blocks.append(_flow_table(stats, accent))
    if stats.workers:
        blocks.append(_worker_table(stats, accent))
    for label, rows in (("profile", stats.per_profile), ("engine", stats.per_engine)):
        if rows:
            blocks.append(_breakdown_table(label, rows))
    if stats.cost_usd is not None or stats.tokens is not None:
        blocks.append(_cost_table(stats))
    return blocks


def _cost_table(stats: Stats) -> Any:
    """What the window's attempts cost, and the dearest shipped jobs."""
    table = _table(("spent", "left"), ("tokens", "right"), ("cost", "right"), ("attempts", "right"))
    table.add_row("all attempts", _tokens(stats.tokens), _usd(stats.cost_usd), f"{stats.attempts:,}")
    for row in stats.shipped_cost[:10]:
        table.add_row(f"shipped {row.job}", _tokens(row.tokens), _usd(row.cost_usd), f"{row.attempts:,}")
    return table


def _table(*columns: tuple[str, JustifyMethod]) -> Any:
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1))
    for header, justify in columns:
        table.add_column(header, justify=justify, overflow="ellipsis", no_wrap=True)
    return table


def _stage_table(stats: Stats, accent: str) -> Any:
    from rich.text import Text

    table = _table(("stage", "left"), ("jobs", "right"), ("", "left"))
    total = sum(stats.jobs_per_stage.values())
    for stage, count in stats.jobs_per_stage.items():
        table.add_row(stage, f"{count:,}", Text(bar(count / total if total else 0.0, 20), style=accent))
    table.add_row("total", f"{total:,}", "")
    return table


SPARK_ROOM = 60  # bars at most: fits 80 columns with room to spare


def _shipped_block(stats: Stats, width: int, accent: str) -> Any:
    from rich.text import Text

    days = stats.shipped_per_day
    counts, per = _buckets(days, max(10, min(SPARK_ROOM, width - 4)))
    total = sum(count for _, count in days)
    unit = "day" if per == 1 else f"{per} days"
    text = Text(f"shipped: {total:,} in {len(days)} day{'s' if len(days) != 1 else ''}, "
                f"at most {max(counts, default=0):,} per {unit}\n")
    text.append("  " + sparkline(counts), style=accent)
    if days:
        first, last = days[0][0], days[-1][0]
        gap = max(1, len(counts) - len(first) - len(last))
        text.append(f"\n  {first}{' ' * gap}{last}" if len(counts) >= len(first) + len(last) + 1
                    else f"\n  {first} .. {last}")
    return text


def _flow_table(stats: Stats, accent: str) -> Any:
    from rich.text import Text

    table = _table(("flow", "left"), ("median", "right"), ("p90", "right"), ("n", "right"))
    for label, p in (("queued -> claimed", stats.queued_to_claimed),
                     ("claimed -> done", stats.claimed_to_done)):
        table.add_row(label, _seconds(p.median), _seconds(p.p90), f"{p.count:,}")
    rates = _table(("rate", "left"), ("", "right"), ("of", "right"), ("", "left"))
    for label, rate, whole in (("verify passed", stats.verify_pass_rate, stats.verify_runs),
                               ("first attempt passed", stats.first_pass_rate, stats.first_attempts)):
        rates.add_row(label, _percent(rate), f"{whole:,}", Text(bar(rate or 0.0, 20), style=accent))
    counts = Text(f"attempts {stats.attempts:,}   retries {stats.retries:,}   reclaims "
                  f"{stats.reclaims:,}   dead letters {stats.dead_letters:,}")
    pushes = stats.pushes
    if pushes is not None and pushes.per_job is not None:
        counts.append(f"\npushes {pushes.per_job:g} a job ({pushes.rejected_per_job:g} lost "
                      f"races, {pushes.refused:,} refused)   heartbeats "
                      f"{pushes.heartbeats_per_hour or 0:g} an hour, {pushes.machines} machine(s)")
    from rich.console import Group

    return Group(table, rates, counts)


def _worker_table(stats: Stats, accent: str) -> Any:
    from rich.text import Text

    table = _table(("worker", "left"), ("attempts", "right"), ("busy", "right"), ("share", "right"),
                   ("", "left"))
    for row in stats.workers:
        table.add_row(row.worker, f"{row.attempts:,}", _seconds(row.busy_seconds),
                      _percent(row.busy_share), Text(bar(row.busy_share, 20), style=accent))
    return table


def _breakdown_table(label: str, rows: tuple[Breakdown, ...]) -> Any:
    table = _table((label, "left"), ("attempts", "right"), ("ok", "right"), ("failed", "right"),
                   ("first pass", "right"), ("median time", "right"), ("tokens", "right"),
                   ("cost", "right"))
    for row in rows:
        table.add_row(row.name, f"{row.attempts:,}", f"{row.ok:,}", f"{row.failed:,}",
                      _percent(rate_of(row.first_passed, row.first_attempts)),
                      _seconds(row.median_duration), _tokens(row.tokens), _usd(row.cost_usd))
    return table
