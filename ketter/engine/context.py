"""The caller's side of a transfer: naming tag, progress, faults, warnings.

The engine is free of the job store; everything it must tell the caller (or
ask of it) goes through a :class:`TransferContext`. The job pipeline
subclasses it: ``progress`` renews the lease and raises ``LostClaim`` or
``ShutdownRequested`` to stop a copy at a safe point.
"""

from __future__ import annotations

import os
import re
import signal
import uuid
from typing import Any

from ketter.errors import LostClaim, ShutdownRequested

#: Job ids and claim tokens appear in temporary names and are parsed back by
#: the orphan sweep, so they must not contain '-' (the separator) or '/'.
_TOKEN = re.compile(r"[A-Za-z0-9_.]{1,64}")

#: What ``ctx.progress`` raises to stop a step at a safe point. A resumable
#: file partial survives them (a later claim picks it up); every other
#: temporary is removed.
STOP_SIGNALS = (LostClaim, ShutdownRequested)

FAULT_POINTS = frozenset(
    {
        "mid-copy",
        "after-fsync-before-place",
        "after-place",
        "between-source-deletes",
        "mid-rollback",
        "before-rename",
    }
)


#: The node's share of a temporary name: at most this many characters.
NODE_IN_NAME = 32


def node_token(node: str) -> str:
    """The node's name as it appears in temporary names: characters other
    than ``[A-Za-z0-9_.]`` (a ``-``, the names' separator; a ``/``; spaces)
    become ``_``, cut to :data:`NODE_IN_NAME`."""
    return re.sub(r"[^A-Za-z0-9_.]", "_", node)[:NODE_IN_NAME] or "_"


def env_fault(point: str) -> None:
    """SIGKILL this process when ``$KETTER_FAULT`` names ``point``."""
    if os.environ.get("KETTER_FAULT") == point:
        os.kill(os.getpid(), signal.SIGKILL)


class TransferContext:
    """Identity of the attempt plus hooks the engine calls; defaults are no-ops.

    ``tag`` is ``"<job_id>-<claim>@<node>"`` (``"<job_id>-<claim>"`` without
    a node, and in temporaries left by Ketter before issue #18); every
    temporary carries it (``.ketter-<tag>-<name>.part``) so a later claim of
    the same job can find and resume or remove it (via :attr:`job_prefix`),
    the orphan sweep can tell whose it is, and an operator looking at a
    shared folder can tell which node wrote it. The node is part of the
    claim's field (no ``-`` in it): the parsers, which split on ``-``, read
    both shapes.
    """

    #: Checkpoint progress calls closer together than this (seconds) are
    #: skipped, so a fast local copy does not hammer the job store with lease
    #: renewals; tests set it to 0 to see every checkpoint.
    progress_interval: float = 0.1

    def __init__(
        self,
        job_id: str | None = None,
        claim: str | None = None,
        *,
        expected_devs: dict[str, int] | None = None,
        node: str | None = None,
    ) -> None:
        job_id = job_id if job_id is not None else "t" + uuid.uuid4().hex[:12]
        claim = claim if claim is not None else uuid.uuid4().hex[:8]
        for label, token in (("job_id", job_id), ("claim", claim)):
            if not _TOKEN.fullmatch(token):
                raise ValueError(f"{label} {token!r} must match [A-Za-z0-9_.]{{1,64}}")
        self.job_id = job_id
        self.claim = claim
        self.node = node_token(node) if node else None
        #: st_dev of each route root recorded at job start (mount guard);
        #: filled at the job's validation (the workers' ``Attempt``).
        self.expected_devs = expected_devs
        self.warnings: list[tuple[str, dict[str, Any]]] = []

    @property
    def tag(self) -> str:
        tag = f"{self.job_id}-{self.claim}"
        return f"{tag}@{self.node}" if self.node else tag

    @property
    def job_prefix(self) -> str:
        """Prefix of every temporary of this job, whatever the claim."""
        return f".ketter-{self.job_id}-"

    def progress(self, bytes_done: int, phase: str) -> None:
        """Called at every checkpoint (throttled to about 10 per second) and
        at least once a second while a step reads or hashes data.

        ``phase`` is ``copy``, ``verify``, ``package``, ``extract``,
        ``resume-check``, ``hash`` (same-filesystem move) or ``compare``
        (``skip_identical`` hashing an existing destination). Raise
        :class:`ketter.errors.LostClaim` or
        :class:`ketter.errors.ShutdownRequested` to abort at a safe point.
        """

    def before_irreversible(self, what: str) -> None:
        """Called right before each irreversible step of the engine (each
        source deletion of a move); raise to stop it. The job pipeline stops
        there when its job store was deleted or replaced (issue #14 finding 9)."""

    def fault(self, point: str) -> None:
        """Fault injection for crash tests: SIGKILL self at ``$KETTER_FAULT``."""
        env_fault(point)

    def warn(self, event: str, **details: Any) -> None:
        """Something the operator should know that does not fail the job."""
        self.warnings.append((event, details))
