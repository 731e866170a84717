"""A batch's claims checked once before its placements, for as long as
their leases say they hold.

A placement (the rename to the final name) is irreversible, and a
filesystem rename cannot be fenced by the job store: the worker checks that
its claim still holds the job right before it. A batch (:mod:`.batch`)
places up to 16 files in a row, and a check per file cost a round trip per
file on PostgreSQL, on the batch's critical path.

Instead, one read before the first placement returns, for every job of the
batch still held by its claim, the seconds its lease has left on the
leases' clock (:meth:`ketter.store.ports.leases.LeasesPort.leases_held`).
Nobody can take a job before its lease runs out: a claim needs the lease
expired (or released by its holder). So that read vouches for the claims
for the time the shortest lease had left, and the fence trusts it for
**half** of that, measured from before the read was sent, on this machine's
``CLOCK_BOOTTIME`` (which also counts a suspend and a ``SIGSTOP``: a worker
frozen past its lease finds its trust run out when it wakes up). Past
that, or when a lease had little left (a stalled keeper), each placement
checks its claim again as before (:func:`ketter.jobs.claim.ensure_claim`).

This is no weaker than a check per file: either way a claim that holds at
the check may be lost before the rename that follows it if the process
stalls in between; the fence adds a bound on how long a check is trusted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from ketter.jobs.claim import ensure_claim
from ketter.runtime.faults import fault

if TYPE_CHECKING:
    from ketter.store.port import JobStore


def _boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


class ClaimFence:
    """The claims of ``claims`` (job id → claim token), read once, at the
    first :meth:`ensure`."""

    def __init__(
        self,
        store: JobStore,
        claims: Mapping[int, str],
        *,
        clock: Callable[[], float] = _boottime,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.claims = dict(claims)
        self.clock = clock
        self.now = now
        #: Jobs the read found held by their claim (None: not read yet).
        self._held: set[int] | None = None
        #: ``clock()`` until which the read is trusted.
        self._until = float("-inf")

    def ensure(self, job_id: int) -> None:
        """Raise :class:`ketter.errors.LostClaim` (or ``StoreLost``) unless
        the job's claim holds it: checked right before its placement."""
        self.store.ensure_intact(f"job {job_id}")
        if self._held is None:
            self._read()
        if job_id in (self._held or ()) and self.clock() < self._until:
            return
        # Not held at the read (its message says by whom), or the read's
        # trust ran out: the claim read again, as for a single job.
        ensure_claim(self.store, job_id, self.claims[job_id])

    def _read(self) -> None:
        sent = self.clock()
        left = self.store.leases_held(self.claims, now=self.now())
        fault("batch-fenced", store=self.store)  # crash tests: frozen right after the read
        self._held = set(left)
        if left:
            self._until = sent + min(left.values()) / 2
