"""Logs and artifacts kept in the queue with a result: written in the result's transaction, and
never the reason a result is not recorded (a lost log is said in the event instead)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from aq.core.manifest import Manifest
from aq.core.scrub import Scrubber
from aq.errors import AqError
from aq.infra.confine import read_file
from aq.store.queue import Queue
from aq.store.tx import Tx
from aq.trackers.settings import secret_names
from aq.worker.attempt import AttemptResult
from aq.worker.context import Voice


class Keeper:
    def __init__(self, queue: Queue, voice: Voice) -> None:
        self.queue = queue
        self.voice = voice

    def reason(self, err: BaseException) -> str:
        """An error as a short clause: an OS error by the file it is about, without errno."""
        if isinstance(err, OSError) and err.strerror:
            return (f"{self.queue.relative(Path(err.filename))}: {err.strerror}" if err.filename
                    else err.strerror)
        return str(err)

    def write(self, tx: Tx, path: Path, data: bytes | str) -> str | None:
        """Write a log or artifact into the queue: None, or why it could not be (a folder that
        cannot be written, a link in the way). Recording a result never fails on it."""
        try:
            tx.write(path, data)
        except (AqError, OSError) as err:
            return self.reason(err)
        return None

    def log(self, tx: Tx, job_id: str, attempt: int, result: AttemptResult
            ) -> tuple[str | None, str | None]:
        """Copy the capped, scrubbed log into queue/.logs/<id>/<n>.log (or .stale-<x>.log): its
        path, or None and why it could not be written. A lost log never loses the result."""
        path = self.queue.logs_dir(job_id) / f"{attempt}.log"
        if path.exists():  # a fenced duplicate must not overwrite the log of record
            path = path.with_name(f"{attempt}.stale-{secrets.token_hex(2)}.log")
        lost = self.write(tx, path, result.log_text)
        if lost is not None:
            self.voice.warn(f"{job_id}: the log of attempt {attempt} was not kept ({lost}); the "
                            "result is recorded without it")
            return None, lost
        return self.queue.relative(path), None

    def artifacts(self, tx: Tx, job_id: str, attempt: int, result: AttemptResult,
                  manifest: Manifest) -> list[str]:
        """Copy the attempt's artifacts to queue/.logs/<id>/<n>/, text scrubbed, within artifact_max."""
        if not result.artifacts or result.cwd is None:
            return []

        config = self.queue.config
        spec = config.engines.get(config.engine_for(manifest))
        scrubber = Scrubber({**os.environ, **(spec.env if spec else {})},
                            secret_names(config.trackers))
        target = self.queue.logs_dir(job_id) / str(attempt)
        kept: list[str] = []
        budget = config.artifact_max
        for path in result.artifacts:
            try:  # looked at again: a link put in its way since the attempt is refused
                data = read_file(result.cwd, path, where="the job's cwd")
            except (AqError, OSError) as err:
                self.voice.warn(f"{job_id}: artifact {path.name} not kept ({self.reason(err)})")
                continue
            if len(data) > budget:
                self.voice.say(f"{job_id}: artifact {path.name} skipped: over artifact_max")
                continue
            # surrogateescape keeps every byte as it was, except what the scrubber replaces
            data = scrubber.text(data.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")
            budget -= len(data)
            # a file's name can hold a secret too: the kept copy's path is scrubbed like its text
            dest = target / scrubber.line(str(path.relative_to(result.cwd)))
            lost = self.write(tx, dest, data)
            if lost is not None:
                self.voice.warn(f"{job_id}: artifact {path.name} not kept ({lost})")
                continue
            kept.append(self.queue.relative(dest))
        return kept
