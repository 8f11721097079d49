"""`aq run` as background processes of a test, killed at its end if still alive."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers.cli import aq_env


class Workers:
    """`aq run` processes started in the background; any still alive at the end are killed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, env: dict[str, str] | None = None,
              new_session: bool = False) -> subprocess.Popen[bytes]:
        n = len(self.procs)
        logs = self.root.parent
        with open(logs / f"worker-{n}.out", "wb") as stdout, \
                open(logs / f"worker-{n}.err", "wb") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-m", "aq", "run", *args], cwd=self.root, env=aq_env(env),
                stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                start_new_session=new_session,
            )
        self.procs.append(proc)
        return proc

    def stderr(self, proc: subprocess.Popen[bytes]) -> str:
        return (self.root.parent / f"worker-{self.procs.index(proc)}.err").read_text()

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
