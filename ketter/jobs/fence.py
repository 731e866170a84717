"""A batch's claims checked once before its placements, for as long as
their leases say they hold.

A placement (the rename to the final name) is irreversible, and a
filesystem rename cannot be fenced by the job store: the worker checks that
its claim still holds the job right before it. A batch (:mod:`.batch`)
places up to 64 files in a row, and a check per file cost a round trip per
file on PostgreSQL, on the batch's critical path.

Instead, one read before the first placement returns, for every job of the
batch still held by its claim, the seconds its lease has left on the
leases' clock (:meth:`ketter.store.ports.leases.LeasesPort.leases_held`).
Nobody else can claim a job before its lease runs out (a claim needs the
lease expired; only the holder releases it), and a renewal whose clock is
read after the read sets the lease to at least ``lease.ttl`` past it. So the read vouches
for the claims, and the fence trusts it for **half** the shortest time left
and half the current ``lease.ttl`` (a reload may have shortened it), at
most :data:`MAX_TRUST`, timed from before the read was sent on two clocks:
this machine's ``CLOCK_BOOTTIME`` (it counts a suspend and a ``SIGSTOP``: a
worker frozen past its lease finds its trust run out when it wakes up) and
its wall clock (a step forward ends the trust; on SQLite it is the leases'
clock). Past that, when a lease had little left (a stalled keeper), or once
the keeper found a claim lost, each placement checks its claim again
(:func:`ketter.jobs.claim.ensure_claim`).

What this assumes, and what it exposes: a process frozen in a way its own
clocks do not see (a paused virtual machine), or the database server's
clock stepped forward, while the batch places its files, can place a file
whose job another worker has taken. A check per file had the same exposure
between each check and its rename; the fence's is the whole placement loop,
at most :data:`MAX_TRUST` seconds (docs/guarantees.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from ketter.jobs.claim import ensure_claim
from ketter.runtime.faults import fault

if TYPE_CHECKING:
    from ketter.store.port import JobStore

#: The longest a read vouches for the claims (s): a batch's placement loop
#: on a local disk takes milliseconds; a slower one checks each file past it.
MAX_TRUST = 2.0


def _boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


class ClaimFence:
    """The claims of ``claims`` (job id → claim token), read once, at the
    first :meth:`ensure`. ``ttl``: the config's ``lease.ttl`` now; ``now``:
    the caller's wall clock (the leases' clock on SQLite)."""

    def __init__(
        self,
        store: JobStore,
        claims: Mapping[int, str],
        *,
        ttl: Callable[[], float],
        now: Callable[[], float] = time.time,
        clock: Callable[[], float] = _boottime,
        max_trust: float = MAX_TRUST,
    ) -> None:
        self.store = store
        self.claims = dict(claims)
        self.ttl = ttl
        self.now = now
        self.clock = clock
        self.max_trust = max_trust
        #: Jobs the read found held by their claim (None: not read yet).
        self._held: set[int] | None = None
        #: Seconds the read is trusted for, from ``_sent`` (both clocks).
        self._trust = 0.0
        self._sent = (0.0, 0.0)

    def ensure(self, job_id: int, *, lost: bool = False) -> None:
        """Raise :class:`ketter.errors.LostClaim` (or ``StoreLost``) unless
        the job's claim holds it: checked right before its placement.
        ``lost``: the lease keeper found the claim gone (read again)."""
        self.store.ensure_intact(f"job {job_id}")
        if self._held is None:
            self._read()
        if not lost and job_id in (self._held or ()) and self._trusted():
            return
        # Not held at the read (its message says by whom), or the read's
        # trust ran out: the claim read again, as for a single job.
        ensure_claim(self.store, job_id, self.claims[job_id])

    def _trusted(self) -> bool:
        trust = min(self._trust, self.ttl() / 2)
        boot, wall = self._sent
        return self.clock() - boot < trust and 0.0 <= self.now() - wall < trust

    def _read(self) -> None:
        self._sent = (self.clock(), self.now())
        left = self.store.leases_held(self.claims, now=self._sent[1])
        fault("batch-fenced", store=self.store)  # crash tests: frozen right after the read
        self._held = set(left)
        if left:  # the current ttl's half is applied at each placement
            self._trust = min(min(left.values()) / 2, self.max_trust)
