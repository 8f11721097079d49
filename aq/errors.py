"""One root exception with an exit code; subclasses say what happened and what to do.

`aq.ui.cli.boundary` is the only place that turns these into a line on stderr.
"""

from __future__ import annotations

from enum import IntEnum


class ExitStatus(IntEnum):
    OK = 0
    REFUSED = 1  # the action was refused: bad move, not found, invalid queue content
    USAGE = 2  # the command line itself is wrong


class AqError(Exception):
    """Base of every error aq reports to a person. `str(err)` is the one line shown."""

    exit_status: ExitStatus = ExitStatus.REFUSED


class UsageError(AqError):
    exit_status = ExitStatus.USAGE


class QueueNotFound(AqError):
    pass


class JobNotFound(AqError):
    pass


class LogNotFound(AqError):
    """No log of that attempt is on this machine: it has not run, runs elsewhere, or was not kept."""


class ProfileNotFound(AqError):
    pass


class AmbiguousJob(AqError):
    pass


class InvalidJobId(AqError):
    exit_status = ExitStatus.USAGE


class ManifestError(AqError):
    """A manifest that cannot be used: names the file, the key, the value and what was expected."""

    def __init__(self, source: str, problem: str, key: str | None = None) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        where = f"{source}: key '{key}'" if key else source
        super().__init__(f"{where}: {problem}")


class ConfigError(AqError):
    pass


class MoveRefused(AqError):
    pass


class JobExists(AqError):
    pass


class IdempotencyConflict(AqError):
    pass


class GitError(AqError):
    pass


class RemoteUnreachable(AqError):
    """The queue's remote did not answer, and the change must land there to count."""


class PushUncertain(AqError):
    """A push failed in transport and the remote cannot be asked whether it landed.

    `result` is what the change returned; the caller must not act on it until it is confirmed.
    """

    def __init__(self, message: str, result: object, commit: str) -> None:
        super().__init__(message)
        self.result = result
        self.commit = commit


class QueueBusy(AqError):
    """Another aq on this machine held the clone's lock for longer than this one waits."""


class NotApplicable(AqError):
    """The command has nothing to work on here: a job with no repo or no tracker item, a queue
    with no git repository or no remote."""


class PullRequestFailed(AqError):
    """A ship by pull request opened none: gh failed, or neither gh nor a GitHub token is there."""


class RemoteRefused(AqError):
    """The remote said no to a push for a reason of its own (a hook, a rate limit, a protected
    branch): not a lost race, so not tried again at once."""


class RemoteBusy(AqError):
    """Every try to push lost to another machine's push (a very busy remote)."""


class ArchiveWaits(AqError):
    """A machine of the fleet runs an older aq, which cannot read the archive on its own ref:
    a job archived now would vanish from its view."""


class UnsafePath(AqError):
    """A file or folder aq would read or write in the queue is a symbolic link, not a regular
    file, or leads outside the queue (DESIGN §5): refused, never followed."""
