"""Backlog.md (https://github.com/MrLesk/Backlog.md): tasks as Markdown files in a project,
read and written only through its own CLI (`backlog task view/list/edit`), so its files stay
the way it writes them."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aq.core.scrub import Scrubber
from aq.infra import proc
from aq.trackers.base import Item, Post, Ref, TrackerError, our_priority
from aq.trackers.settings import DONE, IN_PROGRESS, BacklogSettings

TIMEOUT = 60.0
MARK = "[aq:{key}]"  # ends each comment aq posts: a retry finds it and does not post again


class Backlog:
    def __init__(self, settings: BacklogSettings, root: Path, env: Mapping[str, str]) -> None:
        self.settings = settings
        if settings.path is None:
            raise TrackerError("trackers.backlog.path is not set in aq.yaml: set it to the "
                               "Backlog.md project's folder (relative to the queue)", everywhere=True)
        self.project = (Path(root) / Path(settings.path).expanduser()).resolve()
        self._env = dict(env)

    def fetch(self, ref: Ref) -> Item:
        data = self._json(["task", "view", ref.item, "--json"], f"task {ref.item}")
        return self._item(data["task"])

    def query(self, query: str, label: str | None) -> list[Item]:
        """Tasks in the 'To Do' status (its name from aq.yaml), with the label if one is set;
        `query` is handed to Backlog.md's own --search when not empty."""
        argv = ["task", "list", "--json", "-s", self.settings.todo]
        label = label or self.settings.label
        if label:
            argv += ["-l", label]
        if query.strip():
            argv += ["--search", query.strip()]
        listed = self._json(argv, "the task list")
        return [self.fetch(Ref("backlog", str(task["id"]).upper())) for task in listed["tasks"]]

    def post(self, ref: Ref, post: Post) -> str | None:
        task = self._json(["task", "view", ref.item, "--json"], f"task {ref.item}")["task"]
        mark = MARK.format(key=post.key)
        argv = ["task", "edit", ref.item]
        status = {IN_PROGRESS: self.settings.in_progress, DONE: self.settings.done}.get(post.status or "")
        done = str(task.get("status") or "").lower() == self.settings.done.lower()
        if status and task.get("status") != status and not (post.status == IN_PROGRESS and done):
            argv += ["-s", status]  # (a task done meanwhile is not put back in progress)
        if not any(mark in str(c.get("body") or "") for c in task.get("comments") or ()):
            # a line of only '---' is Backlog.md's own separator between comments
            text = "\n".join("- - -" if line.strip() == "---" else line
                             for line in post.comment.splitlines())
            argv += ["--comment", f"{text}\n\n{mark}", "--comment-author", "aq"]
        if len(argv) > 3:
            self._run(argv, f"task {ref.item}")
        return None

    def _item(self, task: Mapping[str, Any]) -> Item:
        status = str(task.get("status") or "")
        return Item(
            ref=Ref("backlog", str(task["id"]).upper()), title=str(task.get("title") or ""),
            body=str(task.get("description") or "").strip(),
            labels=tuple(str(label) for label in task.get("labels") or ()),
            priority=our_priority(task.get("priority")), status=status,
            open=status.lower() != self.settings.done.lower(),
            url=str(task["path"]) if task.get("path") else None,
        )

    def _json(self, argv: list[str], what: str) -> Any:
        out = self._run(argv, what)
        try:
            return json.loads(out)
        except ValueError:
            raise TrackerError(f"Backlog.md printed no JSON for {what}: is "
                               f"{self.settings.command[0]} Backlog.md 1.52 or later?") from None

    def _run(self, argv: list[str], what: str) -> str:
        if not self.project.is_dir():
            raise TrackerError(f"{self.project} does not exist (trackers.backlog.path in aq.yaml): "
                               "point it at the Backlog.md project's folder", everywhere=True)
        program = shutil.which(self.settings.command[0], path=self._env.get("PATH"))
        if program is None:
            raise TrackerError(f"{self.settings.command[0]} (Backlog.md) is not installed here: "
                               "npm install -g backlog.md, or set trackers.backlog.command", everywhere=True)
        try:
            done = proc.run([program, *self.settings.command[1:], *argv], cwd=self.project,
                            env=self._env, timeout=TIMEOUT)
        except OSError as err:
            raise TrackerError(f"cannot run {program}: {err.strerror}") from None
        if done.returncode != 0:
            said = (done.stderr.strip() or done.stdout.strip()).splitlines()
            reason = Scrubber(self._env).line(said[-1])[:300] if said else f"exit {done.returncode}"
            retry = done.returncode == proc.TIMED_OUT
            if "not found" in reason.lower():
                reason += f" (in {self.project})"
            raise TrackerError(f"Backlog.md could not read or change {what}: {reason}", retry=retry)
        return done.stdout
