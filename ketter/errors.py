"""Ketter's exception tree, split by what the system should do next.

* :class:`TransientError` — the job goes to ``retry_wait`` and is tried
  again after a backoff (disk full, share gone, source still changing).
* :class:`PermanentError` — retrying cannot help; the job is rolled back and
  fails now (bad config, path outside a route, a checksum that mismatches
  again).
* :class:`RouteUnavailable` — a transient error of the *route*, not of the
  job: the route is paused and its jobs wait without using up attempts.

Each class docstring doubles as its default message, so ``raise
ChecksumMismatch()`` still says something useful.
"""

from __future__ import annotations


class KetterError(Exception):
    """Ketter failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip().splitlines()[0])

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class TransientError(KetterError):
    """A temporary failure; the job will be retried after a backoff."""


class PermanentError(KetterError):
    """A failure that retrying cannot fix; the job fails now."""


class RouteUnavailable(TransientError):
    """A route root is not reachable (unmounted share, missing folder, low
    space); the route is paused until it comes back."""


class RouteNotWritable(RouteUnavailable):
    """A route folder refuses writes (EROFS) although it is mounted and
    readable: a folder that appeared after the service started is read-only
    under the unit's sandbox (it is not in ``ReadWritePaths=``), or the
    filesystem is mounted read-only. The route is paused, never the job's
    attempts used; re-render the units (or remount read-write)."""


class DestinationFull(RouteUnavailable):
    """The destination has no room for the job (ENOSPC, EDQUOT, or below
    ``min_free``); the route is paused and resumes by itself once space
    returns. ``room_needed`` is the bytes the job needs free on top of
    ``min_free`` (None when the job's size is not known here)."""

    def __init__(self, message: str | None = None, *, room_needed: int | None = None) -> None:
        super().__init__(message)
        self.room_needed = room_needed


class SourceChanged(TransientError):
    """The source changed or vanished while it was being copied; it will be
    copied again once it is stable."""


class SpecialSourceFile(PermanentError):
    """A source is a FIFO, socket or device, not a regular file; Ketter never
    reads one (it could block a worker forever)."""


class SourceInUse(TransientError):
    """A source is still open for writing by another process; it is not
    deleted (nor, by the watcher, considered ready) until it is closed. The
    job waits without using up its attempts."""


class SourceSuperseded(PermanentError):
    """The detected version of the source no longer exists (replaced,
    rewritten or removed before or while it was copied); the newer version
    is a job of its own, so this one ends ``superseded`` without an alert."""


class VerificationFailed(KetterError):
    """A copy does not match the checksums it was verified against.

    A mark, not an action: besides what its other base says (retried or
    failed), the error policy sends a ``verify_mismatch`` alert
    (:mod:`ketter.jobs.policy`)."""


class ChecksumMismatch(TransientError, VerificationFailed):
    """The destination does not read back with the checksum of the source;
    the copy is discarded and retried (repeated mismatches fail the job)."""


class ConfigError(PermanentError):
    """The configuration is invalid; fix the file and start again."""

    def __init__(self, problems: list[str] | str) -> None:
        if isinstance(problems, str):
            problems = [problems]
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class ManifestError(PermanentError):
    """A delivery manifest (ASC MHL) cannot be written for this folder; it
    would fail the same way on every attempt (each one copying and verifying
    the whole folder again), so the job fails now."""


class RouteRemoved(PermanentError):
    """The job's route is no longer in the configuration (removed or renamed
    since the job was created); put the route back and re-queue the job."""


class PathOutsideRoute(PermanentError):
    """A path resolves outside its route's roots; Ketter never follows it."""


class DestinationLinkError(PathOutsideRoute):
    """A folder on the way to a destination name is a symbolic link; Ketter
    does not follow links in a destination (a link planted there could make
    it write outside the route)."""


class TemporarySwapped(PermanentError):
    """A temporary in the destination folder is no longer the file or folder
    Ketter wrote and verified (someone renamed it away and put another under
    its name); nothing is delivered and the source is kept."""


class DestinationSpecialFile(PermanentError):
    """A destination-side name Ketter reads (a temporary, the package, an
    existing file it compares with) is a FIFO, socket or device; it is never
    opened (it could block a worker forever)."""


class DestinationConflict(PermanentError):
    """The destination name already exists and the route's conflict policy
    forbids replacing it (``conflict: fail``)."""


class InvalidTransition(KetterError):
    """A job state change was refused: the job is not in the expected state,
    the transition is not allowed, or the caller no longer holds the claim."""


class LostClaim(InvalidTransition):
    """This worker's claim on the job was taken over (lease expired and the
    sweep handed it to another worker); stop without touching anything."""


class JobCancelled(InvalidTransition):
    """An operator cancelled the job before its placement: the worker stops,
    rolls it back like a failure and ends it ``cancelled``."""


class StoreLost(LostClaim):
    """The job store file was deleted or replaced while this process had it
    open: every claim recorded in it is lost, and nothing irreversible (a
    placement, a source deletion) may run until the node is restarted on a
    real store."""


class StoreMissing(ConfigError):
    """The job store is missing on a node that has run before; Ketter does not
    silently start over with an empty one."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip().splitlines()[0])


class ShutdownRequested(BaseException):
    """Raised inside a copy loop when the process is asked to stop.

    Derives from :class:`BaseException` so that no ``except Exception``
    on the way up swallows it: the job must be checkpointed and released,
    not marked failed.
    """


class NodeNameInUse(ConfigError):
    """Another live process set uses this node's name on the shared job store
    (``node:`` must be unique among the nodes of one database)."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip().splitlines()[0])
