#!/usr/bin/env python3
"""aq hook: POST a job's move or an alert to a chat webhook, as JSON {"text": ...}.

Slack incoming webhooks, Mattermost, Rocket.Chat and Discord's Slack-compatible endpoint (its
webhook URL + "/slack") take {"text": ...}; a Discord webhook URL without "/slack" gets
{"content": ...}, its own word for it.

    aq.yaml:
      hooks:
        on_stage: {failed: path/to/webhook.py, dead_letter: path/to/webhook.py}
        on_alert: path/to/webhook.py

The URL comes from $AQ_WEBHOOK_URL in the environment of the workers and people who move jobs,
never from aq.yaml (it is committed, and the URL is as good as a password). Reads the event's
JSON on stdin and posts its "text" line; exits non-zero with one line on stderr if the post did
not go through (aq reports and records that; the move stands). Standard library only.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request

TIMEOUT = 8.0  # seconds: under aq's default hook timeout (10s), so a slow server is said here


def message(event: dict[str, object]) -> str:
    text = event.get("text")
    if isinstance(text, str) and text:
        return text
    return f"aq: {os.environ.get('AQ_JOB_ID', '?')} moved to {os.environ.get('AQ_STAGE', '?')}"


def body(url: str, text: str) -> bytes:
    native_discord = "discord" in url.split("/")[2] and not url.rstrip("/").endswith("/slack")
    return json.dumps({"content": text} if native_discord else {"text": text}).encode()


def main() -> int:
    url = os.environ.get("AQ_WEBHOOK_URL", "")
    if not url.startswith(("https://", "http://")):
        print("webhook.py: set AQ_WEBHOOK_URL to the webhook's https:// URL", file=sys.stderr)
        return 2
    try:
        event = json.load(sys.stdin)
    except ValueError:
        event = {}
    text = message(event if isinstance(event, dict) else {})
    request = urllib.request.Request(url, data=body(url, text), method="POST",
                                     headers={"Content-Type": "application/json",
                                              "User-Agent": "aq-webhook-hook"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
            answer.read()
    except urllib.error.HTTPError as err:  # the URL is never printed: it holds the secret
        print(f"webhook.py: the webhook answered HTTP {err.code} {err.reason}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        print(f"webhook.py: the webhook could not be reached: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
