"""What an idle worker does for the queue besides claiming: with aq.yaml `archive_after` set,
it moves the jobs final for longer into the archive (aq.usecases.archive), a batch at a time,
at most once an hour: every worker of a fleet may, and the moves are compare-and-swap like
any other, so two that try at once move each job once.

With aq.yaml `hooks.on_alert` set, it also looks for alerts (aq.usecases.alerts) at most once a
minute (a quarter of `alerts.stall` when that is shorter) and hands each new one to the hook."""

from __future__ import annotations

from aq.errors import AqError
from aq.worker.context import WorkerContext

ARCHIVE_EVERY = 3600.0  # seconds between a worker's looks for jobs due to be archived
ARCHIVE_BATCH = 500  # jobs a look moves at most: one commit
ALERTS_EVERY = 60.0  # seconds between a worker's looks for alerts, at most


class Upkeep:
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self._next_archive = ctx.monotonic()  # the first idle turn looks
        self._next_alerts = ctx.monotonic()

    def idle_turn(self) -> None:
        """An idle worker's turn: archive what is due and raise new alerts, if it is time to."""
        self._archive_turn()
        self._alerts_turn()

    def _alerts_turn(self) -> None:
        ctx = self.ctx
        if ctx.monotonic() < self._next_alerts:
            return
        from aq.usecases.alerts import alert_hook, raise_alerts

        if alert_hook(ctx.queue.config) is None:
            return
        stall = ctx.queue.config.alerts.stall
        every = min(ALERTS_EVERY, stall / 4) if stall is not None else ALERTS_EVERY
        self._next_alerts = ctx.monotonic() + max(every, ctx.options.poll)
        try:
            raise_alerts(ctx.queue, now=ctx.now(), monotonic=ctx.monotonic(), who=ctx.worker_id,
                         say=ctx.voice.say)
        except (AqError, OSError) as err:  # the remote away, a file not writable: next look
            ctx.voice.say_once(f"alerts wait: {err}")

    def _archive_turn(self) -> None:
        ctx = self.ctx
        older_than = ctx.queue.config.archive_after
        if older_than is None or ctx.monotonic() < self._next_archive or ctx.queue.held_back:
            return
        self._next_archive = ctx.monotonic() + ARCHIVE_EVERY
        from aq.usecases.archive import archive

        try:
            done = archive(ctx.queue, now=ctx.now(), older_than=older_than, limit=ARCHIVE_BATCH,
                           who=ctx.worker_id, batch=ARCHIVE_BATCH)
        except (AqError, OSError) as err:  # the remote away, the lock busy, a file gone: the
            ctx.voice.say_once(f"archiving waits: {err}")  # next look tries again
            return
        if done.moved:
            ctx.voice.say(f"archived {len(done.moved)} job(s) final for over "
                          f"{older_than / 86400:g} day(s)"
                          + (f"; {done.left} more next time" if done.left else ""))
            if done.left:  # more due than one batch: look again soon
                self._next_archive = ctx.monotonic() + ctx.options.poll
