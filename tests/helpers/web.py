"""`aq web` served from a queue for a test: a real process on a port the system picks, and
plain HTTP to it.

    with serve_web(queue_root) as web:          # `python -m aq web --port 0 --every 0.5`
        status, html = web.get("/fleet")
        status, said = web.post("/fleet/halt", {"reason": "deploy"})   # CSRF header added
        web.url                                  # "http://127.0.0.1:PORT" (no trailing /)

The process runs in its own session with `aq_env()`; it is stopped (SIGTERM, then SIGKILL) when
the block ends, however it ends. Extra arguments go to `aq web` (`serve_web(root, "--token",
T)`); a token printed in the address is sent with every request as `Authorization: Bearer`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.helpers.cli import aq_env
from tests.helpers.waiting import wait_until

START_WITHIN = 30.0  # seconds for the process to print its address (a busy CI machine is slow)
ADDRESS = re.compile(r"aq web: serving .* at (http://\S+?)/(?:\?token=(\S+))?$", re.M)
CSRF_META = re.compile(r'<meta name="aq-csrf" content="([^"]*)">')


@dataclass
class Served:
    """A running `aq web`: its address and what it printed."""

    url: str  # http://HOST:PORT, without a trailing slash
    token: str | None
    proc: subprocess.Popen[bytes]
    out: Path
    err: Path
    timeout: float = 60.0  # seconds a request may take
    _csrf: str | None = field(default=None, init=False)

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
        """GET `path` ("/fleet?x=1"): the status and the body as text, errors (4xx, 5xx) too."""
        return self._send(urllib.request.Request(self.url + path, headers=self._headers(headers)))

    def post(self, path: str, body: Any = None, *, csrf: bool = True,
             headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """POST `body` as JSON to `path`, with this server's CSRF header unless `csrf=False`:
        the status and the answer parsed as JSON (the text if it is not JSON)."""
        extra = {"content-type": "application/json", **(headers or {})}
        if csrf:
            extra["x-aq-csrf"] = self.csrf()
        data = json.dumps({} if body is None else body).encode()
        status, text = self._send(urllib.request.Request(
            self.url + path, data=data, method="POST", headers=self._headers(extra)))
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def csrf(self) -> str:
        """The CSRF value its pages carry in `<meta name="aq-csrf">` (read once)."""
        if self._csrf is None:
            status, html = self.get("/")
            found = CSRF_META.search(html)
            assert status == 200 and found, f"no CSRF value on the board ({status}):\n{html[:500]}"
            self._csrf = found.group(1)
        return self._csrf

    def output(self) -> str:
        """What the process printed so far (stdout, then stderr): for a failing assertion."""
        return self.out.read_text(errors="replace") + self.err.read_text(errors="replace")

    def _headers(self, extra: dict[str, str] | None) -> dict[str, str]:
        headers = {"accept": "text/html", **(extra or {})}
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        return headers

    def _send(self, request: urllib.request.Request) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                return answer.status, answer.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as err:
            with err:
                return err.code, err.read().decode("utf-8", "replace")


@contextlib.contextmanager
def serve_web(root: Path, *args: str, every: float = 0.5, env: dict[str, str] | None = None
              ) -> Iterator[Served]:
    """`aq web --port 0 --every EVERY ARGS` in the queue at `root`, until the block ends."""
    with tempfile.TemporaryDirectory(prefix="aq-web-") as logs:
        out, err = Path(logs) / "out", Path(logs) / "err"
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-m", "aq", "web", "--port", "0", "--every", str(every), *args],
                cwd=root, env=aq_env(env), stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                start_new_session=True)
        try:
            printed = wait_until(lambda: ADDRESS.search(out.read_text(errors="replace")) is not None
                                 or proc.poll() is not None, START_WITHIN)
            found = ADDRESS.search(out.read_text(errors="replace"))
            assert printed and found, (f"aq web printed no address within {START_WITHIN:.0f}s "
                                       f"(exit {proc.poll()}):\n{out.read_text()}{err.read_text()}")
            yield Served(found.group(1), found.group(2), proc, out, err)
        finally:
            stop(proc)


def stop(proc: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """SIGTERM to the process's session, SIGKILL if it is still there after `grace` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 30.0)):
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait)
