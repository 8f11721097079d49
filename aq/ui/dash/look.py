"""The dash's colours and the stage tabs: a stage and a priority always look the same, in the
list, the tabs and the detail pane."""

from __future__ import annotations

from collections.abc import Mapping

from rich.text import Text

from aq.core.lifecycle import STAGES, Stage

STAGE_STYLE: Mapping[Stage, str] = {
    Stage.INBOX: "bright_blue",
    Stage.BUILDING: "bold yellow",
    Stage.REVIEW: "bold magenta",
    Stage.TESTING: "cyan",
    Stage.SHIPPED: "green",
    Stage.FAILED: "bold red",
    Stage.DEAD_LETTER: "bold white on red",
}
PRIORITY_STYLE: Mapping[str, str] = {"critical": "bold red", "high": "yellow", "medium": "",
                                     "low": "dim"}
PRIORITY_SHORT: Mapping[str, str] = {"critical": "crit", "high": "high", "medium": "med",
                                     "low": "low"}
SHORT_STAGE: Mapping[Stage, str] = {
    Stage.INBOX: "inbox", Stage.BUILDING: "build", Stage.REVIEW: "rev", Stage.TESTING: "test",
    Stage.SHIPPED: "ship", Stage.FAILED: "fail", Stage.DEAD_LETTER: "dead",
}


def status_style(stage: Stage, status: str) -> str:
    if status.startswith("invalid"):
        return "bold red"
    if stage is Stage.INBOX:
        return "green" if status == "ready" else "dim"
    return "red" if stage in (Stage.FAILED, Stage.DEAD_LETTER) else ""


def stage_tabs(counts: Mapping[Stage, int], current: Stage | None, width: int) -> Text:
    """`0 all 1 inbox 12 2 building 1 …`: the key, the stage and its count (the summary line
    below has the total), the shown stage in reverse; the names shortened, then left out,
    until the line fits `width`."""
    for names in ({stage: str(stage) for stage in STAGES}, SHORT_STAGE, None):
        tabs = [("0 all", "bold", current is None)]
        for number, stage in enumerate(STAGES, 1):
            name = f" {names[stage]}" if names is not None else ""
            tabs.append((f"{number}{name} {counts.get(stage, 0)}", STAGE_STYLE[stage],
                         stage is current))
        if sum(len(label) + 1 for label, _, _ in tabs) + 1 <= width or names is None:
            break
    line = Text(no_wrap=True, overflow="ellipsis")
    for label, style, on in tabs:
        line.append(f" {label} " if on else label, style=f"{style} reverse" if on else style)
        line.append("" if on else " ")
    line.rstrip()
    return line
