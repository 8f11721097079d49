"""The ready-made hooks in examples/hooks/, each run by aq on a real move: a webhook POST to a
real HTTP server on 127.0.0.1, a mail handed to `sendmail -t`, a desktop notification (the
last two through stand-in programs first on PATH, which record what they were given)."""

from __future__ import annotations

import email
import importlib.util
import json
import os
import threading
from collections.abc import Callable, Iterator
from email.header import decode_header, make_header
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.cli import REPO, Ran
from tests.helpers.queue import configure, events, stage_of, write_job

Aq = Callable[..., Ran]
EXAMPLES = REPO / "examples" / "hooks"


class Webhook:
    """A chat webhook's stand-in: it keeps each POST's path, headers and JSON body, and answers
    with `status`."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, str], Any]] = []
        self.status = 200
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                hook.posts.append((self.path, dict(self.headers), json.loads(body)))
                self.send_response(hook.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/T0/B0/s3cr3tpart"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    server = Webhook()
    try:
        yield server
    finally:
        server.close()


def stand_in(folder: Path, name: str, out: Path) -> dict[str, str]:
    """A program `name` first on PATH that writes its arguments (a line each) and its stdin to
    `out`.args and `out`.stdin: the environment for aq to run with."""
    folder.mkdir(exist_ok=True)
    program = folder / name
    program.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {out}.args\ncat > {out}.stdin\n")
    program.chmod(0o755)
    return {"PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}


def test_the_webhook_example_posts_slack_compatible_json(aq: Aq, queue_root: Path,
                                                         webhook: Webhook) -> None:
    """webhook.py posts {"text": the event's line} to $AQ_WEBHOOK_URL as JSON."""
    configure(queue_root, hooks={"on_stage": {"failed": str(EXAMPLES / "webhook.py")}})
    write_job(queue_root, "w1", stage="review", title="Fix the login")
    ran = aq("reject", "w1", "--reason", "flaky", env={"AQ_WEBHOOK_URL": webhook.url})
    assert (ran.returncode, ran.stderr) == (0, "")
    (path, headers, body), = webhook.posts
    assert path == "/services/T0/B0/s3cr3tpart"
    assert headers["Content-Type"] == "application/json"
    assert body == {"text": "aq: w1 review -> failed (flaky): Fix the login"}
    assert events(queue_root, "w1", "hook")[0]["exit"] == 0


def test_the_webhook_example_says_a_refusal_without_the_url(aq: Aq, queue_root: Path,
                                                            webhook: Webhook) -> None:
    """A webhook that answers 500: the hook exits 1 with the status in one line, never the URL
    (it is the secret); the move stands."""
    webhook.status = 500
    configure(queue_root, hooks={"on_stage": {"failed": str(EXAMPLES / "webhook.py")}})
    write_job(queue_root, "w2", stage="review")
    ran = aq("reject", "w2", "--reason", "no", env={"AQ_WEBHOOK_URL": webhook.url})
    assert ran.returncode == 0
    assert ran.stderr == ("aq: hook on_stage.failed exited 1: webhook.py: the webhook answered "
                          "HTTP 500 Internal Server Error\n")
    assert stage_of(queue_root, "w2") == "failed"
    assert "s3cr3t" not in json.dumps(events(queue_root, "w2"))


def test_the_webhook_example_needs_its_url(aq: Aq, queue_root: Path) -> None:
    """Without AQ_WEBHOOK_URL, webhook.py says what to set and exits 2."""
    configure(queue_root, hooks={"on_stage": {"testing": str(EXAMPLES / "webhook.py")}})
    write_job(queue_root, "w3", stage="review")
    ran = aq("promote", "w3")
    assert ran.returncode == 0
    assert ran.stderr == ("aq: hook on_stage.testing exited 2: webhook.py: set AQ_WEBHOOK_URL "
                          "to the webhook's https:// URL\n")


def test_the_webhook_example_speaks_discord_s_own_word_to_a_discord_url() -> None:
    """A Discord webhook URL gets {"content": ...}; its Slack-compatible endpoint, and every
    other URL, {"text": ...}."""
    spec = importlib.util.spec_from_file_location("webhook_example", EXAMPLES / "webhook.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert json.loads(module.body("https://discord.com/api/webhooks/1/x", "hi")) == {"content": "hi"}
    assert json.loads(module.body("https://discord.com/api/webhooks/1/x/slack", "hi")) == {"text": "hi"}
    assert json.loads(module.body("https://hooks.slack.com/services/T/B/x", "hi")) == {"text": "hi"}


def test_the_sendmail_example_hands_a_mail_to_sendmail_t(aq: Aq, queue_root: Path,
                                                         tmp_path: Path) -> None:
    """sendmail.sh gives `sendmail -t` a mail To $AQ_MAIL_TO whose subject is the event's line
    (encoded when not ASCII) and whose body holds the event's JSON."""
    env = stand_in(tmp_path / "bin", "sendmail", tmp_path / "sendmail")
    env.update(AQ_MAIL_TO="ops@example.com", AQ_MAIL_FROM="aq@example.com")
    configure(queue_root, hooks={"on_stage": {"shipped": str(EXAMPLES / "sendmail.sh")}})
    write_job(queue_root, "m1", stage="testing", title="Fix the café login")
    ran = aq("ship", "m1", env=env)
    assert (ran.returncode, ran.stderr) == (0, "")
    assert (tmp_path / "sendmail.args").read_text() == "-t\n"
    mail = email.message_from_string((tmp_path / "sendmail.stdin").read_text())
    assert (mail["To"], mail["From"]) == ("ops@example.com", "aq@example.com")
    line = "aq: m1 testing -> shipped (ship by " + events(queue_root, "m1", "moved")[-1]["by"] \
        + "): Fix the café login"
    assert str(make_header(decode_header(mail["Subject"]))) == line
    body = mail.get_payload()
    assert isinstance(body, str) and body.startswith(line + "\n")
    assert json.loads(body.split("The event, as aq gave it:\n", 1)[1])["job"] == "m1"


def test_the_notify_send_example_shows_a_failure_as_critical(aq: Aq, queue_root: Path,
                                                             tmp_path: Path) -> None:
    """notify-send.sh shows the event's line, critical for a job that failed."""
    env = stand_in(tmp_path / "bin", "notify-send", tmp_path / "notify")
    configure(queue_root, hooks={"on_stage": {"failed": str(EXAMPLES / "notify-send.sh")}})
    write_job(queue_root, "n1", stage="review", title="Tidy up")
    ran = aq("reject", "n1", "--reason", "no", env=env)
    assert (ran.returncode, ran.stderr) == (0, "")
    assert (tmp_path / "notify.args").read_text().splitlines() == [
        "--app-name=aq", "--urgency=critical", "aq: n1 -> failed",
        "aq: n1 review -> failed (no): Tidy up"]
