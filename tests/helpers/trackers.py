"""A tracker's command-line client faked as a small script, for the command adapter and the fleet."""

from __future__ import annotations

import json
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from aq.trackers.command import CommandTracker
from aq.trackers.settings import parse_settings
from tests.helpers.git import git

WHO = "alice@laptop"


# A tracker's command-line client, as the command adapter meets one: it prints JSON. Items are
# JSON files in HOME/items; each post is appended to HOME/posts.jsonl with the argv it came in.
# HOME/FAIL makes every call fail (exit 1, quoting the credential it was given), HOME/HANG hang.
FAKE_TRACKER = r'''
import json, os, sys, time
from pathlib import Path

home = Path(sys.argv[1])
verb, args = sys.argv[2], sys.argv[3:]
if (home / "HANG").exists():
    (home / "hung.pid").write_text(str(os.getpid()))
    time.sleep(60)
if (home / "FAIL").exists():
    print("fake: warming up", file=sys.stderr)
    said = (home / "FAIL").read_text()  # what it says before its error, if anything
    print(f"{said}fake: 503 from the server (auth {os.environ.get('FAKE_TRACKER_AUTH', 'none')})",
          file=sys.stderr)
    sys.exit(1)
items = home / "items"
if verb == "view":
    path = items / f"{args[0]}.json"
    if not path.exists():
        sys.exit(f"fake: no item {args[0]}")
    print(path.read_text())
elif verb == "list":
    print(json.dumps({"total": 0, "items": [json.loads(p.read_text())
                                            for p in sorted(items.glob("*.json"))]}))
elif verb in ("comment", "status"):
    with open(home / "posts.jsonl", "a") as out:
        out.write(json.dumps({"verb": verb, "id": args[0], "text": args[1], "argv": sys.argv[1:],
                              "stdin": sys.stdin.read()}) + "\n")
else:
    sys.exit(f"fake: unknown command {verb}")
'''


@dataclass
class FakeTracker:
    home: Path
    name: str = "fake"

    def __post_init__(self) -> None:
        (self.home / "items").mkdir(parents=True, exist_ok=True)
        self.script = self.home / "fake_tracker.py"
        self.script.write_text(FAKE_TRACKER)

    def add(self, ident: str, title: str, body: str = "", labels: tuple[str, ...] = (),
            status: str = "open", **extra: Any) -> str:
        """An item in the tracker; its reference."""
        data = {"id": ident, "title": title, "body": body, "labels": list(labels),
                "status": status, **extra}
        self.put(ident, data)
        return f"cmd:{self.name}:{ident}"

    def put(self, ident: str, data: dict[str, Any]) -> None:
        (self.home / "items" / f"{ident}.json").write_text(json.dumps(data))

    def posts(self) -> list[dict[str, Any]]:
        path = self.home / "posts.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def said(self) -> list[tuple[str, str, str]]:
        """(verb, item, text) of every post, in the order they arrived."""
        return [(p["verb"], p["id"], p["text"]) for p in self.posts()]

    def comments(self) -> list[str]:
        return [p["text"] for p in self.posts() if p["verb"] == "comment"]

    def fail(self, on: bool = True, saying: str = "") -> None:
        flag = self.home / "FAIL"
        if on:
            flag.write_text(saying)
        else:
            flag.unlink(missing_ok=True)

    def command(self, *words: str) -> str:
        return shlex.join([sys.executable, str(self.script), str(self.home), *words])

    def settings(self, **extra: Any) -> dict[str, Any]:
        """Its entry under trackers.cmd in aq.yaml."""
        return {"view": self.command("view", "{id}"), "query": self.command("list", "{query}"),
                "comment": self.command("comment", "{id}", "{text}"),
                "status": self.command("status", "{id}", "{status}"),
                "statuses": {"in_progress": "doing", "done": "closed"},
                "secret_env": ["FAKE_TRACKER_AUTH"], **extra}

    def adapter(self, root: Path, env: dict[str, str] | None = None, **extra: Any) -> CommandTracker:
        spec = parse_settings({"cmd": {self.name: self.settings(**extra)}}, "aq.yaml")
        return CommandTracker(spec.commands[self.name], root, {**os.environ, **(env or {})})


def configure(root: Path, tracker: FakeTracker, takeover: str | None = None, **extra: Any) -> None:
    """Add the tracker to the queue's aq.yaml and commit it, as a person would."""
    table: dict[str, Any] = {"cmd": {tracker.name: tracker.settings(**extra)}}
    if takeover is not None:
        table["takeover"] = takeover
    with (root / "aq.yaml").open("a") as config:
        config.write("\n" + yaml.safe_dump({"trackers": table}))
    git(root, "commit", "-qam", "a tracker")


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, **extra}
