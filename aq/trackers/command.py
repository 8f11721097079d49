"""Any tracker with a command-line client that prints JSON (glab, jira-cli, a script of your
own): aq.yaml names the commands and where each field sits in their JSON."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from aq.core.scrub import Scrubber
from aq.errors import UsageError
from aq.infra import proc
from aq.trackers.base import Item, Post, Ref, TrackerError, our_priority, parse_ref
from aq.trackers.settings import DONE, IN_PROGRESS, CommandSettings

# where a field usually is, when aq.yaml's `fields:` does not say
DEFAULT_PATHS = {
    "id": ("id", "key", "iid", "number"),
    "title": ("title", "summary", "name", "fields.summary"),
    "body": ("body", "description", "fields.description"),
    "labels": ("labels", "fields.labels", "tags"),
    "priority": ("priority", "fields.priority.name", "fields.priority"),
    "status": ("status", "state", "fields.status.name"),
    "url": ("url", "web_url", "html_url", "self"),
}


class CommandTracker:
    def __init__(self, settings: CommandSettings, root: Path, env: Mapping[str, str]) -> None:
        self.settings = settings
        self.root = Path(root)
        self._env = dict(env)
        # the names in secret_env are secrets whatever they are called
        self._scrub = Scrubber(env, settings.secret_env)

    def fetch(self, ref: Ref) -> Item:
        data = self._json(self.settings.view, {"id": ref.item}, f"item {ref.item}")
        if not isinstance(data, dict):
            raise TrackerError(f"cmd:{self.settings.name}: 'view' printed no JSON object for {ref.item}")
        return self._item(data, ref.item)

    def query(self, query: str, label: str | None) -> list[Item]:
        if self.settings.query is None:
            raise TrackerError(f"cmd:{self.settings.name} has no 'query' command in aq.yaml: "
                               "add one that prints a JSON list of items")
        data = self._json(self.settings.query,
                          {"query": query, "label": label or self.settings.label or ""}, "the query")
        if isinstance(data, dict):  # {"items": [...]} and the like: its first list
            data = next((v for v in data.values() if isinstance(v, list)), None)
        if not isinstance(data, list):
            raise TrackerError(f"cmd:{self.settings.name}: 'query' printed no JSON list of items")
        items = []
        for entry in data:
            ident = _pick(entry, "id", self.settings.fields)
            if ident is None or str(ident).strip() == "":
                raise TrackerError(f"cmd:{self.settings.name}: an item the query printed has no "
                                   "id: map one with trackers.cmd.NAME.fields.id")
            try:  # checked as a reference a person gives is: no space, no leading '-'
                ref = parse_ref(f"cmd:{self.settings.name}:{ident}")
            except UsageError as err:
                raise TrackerError(f"cmd:{self.settings.name}: the query printed an item aq "
                                   f"cannot take: {err}") from None
            items.append(self.fetch(ref))
        return items

    def post(self, ref: Ref, post: Post) -> str | None:
        """No read-back here: the queue's event log alone keeps a post from being sent twice."""
        status = self.settings.statuses.get(post.status or "")
        if status and post.status == IN_PROGRESS and not self.fetch(ref).open:
            status = None  # an item done meanwhile (shipped first) is not put back in progress
        if status and self.settings.status is not None:
            self._run(self.settings.status, {"id": ref.item, "status": status}, f"status of {ref.item}")
        if self.settings.comment is None:
            if not (status and self.settings.status):
                raise TrackerError(f"cmd:{self.settings.name} has no 'comment' command in aq.yaml: "
                                   "add one to send a job's progress back")
            return None
        self._run(self.settings.comment, {"id": ref.item, "text": post.comment}, f"comment on {ref.item}")
        return None

    def _item(self, data: Mapping[str, Any], ident: str) -> Item:
        fields = self.settings.fields
        labels = self._labels(_pick(data, "labels", fields), ident)
        for key in ("title", "body"):
            if not _scalar(value := _pick(data, key, fields)) and value is not None:
                raise self._not_text(ident, key, value)
        status = _pick(data, "status", fields)
        if isinstance(status, dict):
            status = status.get("name")
        priority = _pick(data, "priority", fields)
        if isinstance(priority, dict):
            priority = priority.get("name")
        return Item(
            ref=Ref("cmd", ident, self.settings.name),
            title=str(_pick(data, "title", fields) or ""),
            body=str(_pick(data, "body", fields) or "").replace("\r\n", "\n").strip(),
            labels=labels,
            priority=our_priority(priority, self.settings.priorities),
            status=str(status) if status is not None else None,
            open=str(status or "").lower() not in {*self.settings.closed,
                                                   self.settings.statuses.get(DONE, "").lower()} - {""},
            url=str(_pick(data, "url", fields) or "") or None,
        )

    def _labels(self, raw: object, ident: str) -> tuple[str, ...]:
        """An item's labels: a list of names (or of objects with a "name"), or names with commas
        between."""
        if raw is None or raw is False or (isinstance(raw, str | list | dict) and not raw):
            return ()  # none: null, false, "", [], {}
        if isinstance(raw, str):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        names = [label.get("name") if isinstance(label, dict) else label
                 for label in (raw if isinstance(raw, list) else [[raw]])]
        if all(_scalar(name) for name in names):
            return tuple(str(name) for name in names)
        raise self._not_text(ident, "labels", raw)

    def _not_text(self, ident: str, key: str, value: object) -> TrackerError:
        shape = "a list of names, or names with commas between" if key == "labels" else "text"
        return TrackerError(f"cmd:{self.settings.name}: item {ident}'s {key!r} is "
                            f"{json.dumps(value)[:60]}, not text: make the command print {shape}")

    def _json(self, template: Sequence[str], values: Mapping[str, str], what: str) -> Any:
        out = self._run(template, values, what)
        try:
            return json.loads(out)
        except ValueError:
            raise TrackerError(f"cmd:{self.settings.name}: the command for {what} printed no "
                               "JSON: make it print JSON (e.g. --output json)") from None

    def _run(self, template: Sequence[str], values: Mapping[str, str], what: str) -> str:
        argv = [_fill(part, values) for part in template]
        env = {**self._env, **{f"AQ_TRACKER_{k.upper()}": v for k, v in values.items()}}
        try:
            done = proc.run(argv, cwd=self.root, env=env, timeout=self.settings.timeout,
                            input=values.get("text"))
        except OSError as err:
            raise TrackerError(f"cmd:{self.settings.name}: cannot run {argv[0]}: "
                               f"{err.strerror or err}") from None
        if done.returncode != 0:
            said = (done.stderr.strip() or done.stdout.strip()).splitlines()
            reason = self._scrub.line(said[-1])[:300] if said else f"exit {done.returncode}"  # scrubbed, then cut
            raise TrackerError(f"cmd:{self.settings.name}: {argv[0]} failed for {what}: {reason}",
                               retry=True)  # its exit status cannot tell down from refused
        return done.stdout


def _fill(part: str, values: Mapping[str, str]) -> str:
    """Placeholders replaced in one pass: a value holding "{id}" stays as it is."""
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), part)


def _pick(data: object, name: str, fields: Mapping[str, str]) -> Any:
    """The value at the field's dotted path (aq.yaml's, else the usual places)."""
    paths = (fields[name],) if name in fields else DEFAULT_PATHS[name]
    for path in paths:
        value: Any = data
        for step in path.split("."):
            value = value.get(step) if isinstance(value, dict) else None
        if value is not None:
            return value
    return None


def _scalar(value: object) -> bool:
    """Text, or a number read as text: what a title, a body or a label may be."""
    return isinstance(value, str | int | float) and not isinstance(value, bool)
