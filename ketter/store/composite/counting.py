"""What one change of a job adds to its route's ``counters`` (issue #17): a
pure function, applied by :meth:`CompositeJobs.advance` in the transaction
of the change, so a counter moves exactly when the transition commits — a
worker killed before the commit counts nothing, the one that takes the job
over counts it once.

The counters a change adds to (``counters.name``):

* ``transfers.<state>`` — +1 when a job enters a terminal state
  (:data:`ketter.jobs.states.TERMINAL`: ``completed``, ``failed``,
  ``superseded``, and any terminal state added later). A failed job that is
  re-queued and then delivered counts once as failed and once as completed.
* ``bytes_verified``, ``files_transferred``, ``transfer_seconds`` — a job
  ``completed``, from its event's details: its ``size`` (every byte of it
  was read back and compared at the destination, a resumed copy's kept
  prefix included), its ``files`` (1 for a file) and the ``seconds`` of the
  engine's copy and verification of the verified attempt (migration 0005's
  figure, without waits on backoffs or pauses). Counted at the completion,
  not at the ``verify`` step: a worker killed between its verification and
  the placement leaves a job whose next attempt may verify again, and the
  delivery must still count once.
* ``retries`` — +1 when a job enters ``retry_wait`` from another state (a
  transient error, a route pause, a source still being written).
* ``verify_failures`` — +1 for a change whose details carry
  ``verify_mismatch: true`` (the runner's transition after a
  :class:`ketter.errors.VerificationFailed`).
* ``source_deletes`` — +1 for a ``delete_source`` note (a move route's
  source deleted after its verified placement).

And one mark, kept as the highest value written: ``last_success_at``, the
time of the route's latest ``completed``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ketter.jobs.states import TERMINAL, State
from ketter.store.ports.jobs import JobChange

#: The prefix of the per-result transfer counters (``transfers.completed``).
TRANSFERS = "transfers."
BYTES_VERIFIED = "bytes_verified"
FILES_TRANSFERRED = "files_transferred"
TRANSFER_SECONDS = "transfer_seconds"
RETRIES = "retries"
VERIFY_FAILURES = "verify_failures"
SOURCE_DELETES = "source_deletes"
#: A mark, not a total: the time of the route's latest completed job.
LAST_SUCCESS_AT = "last_success_at"

_TERMINAL = frozenset(state.value for state in TERMINAL)


@dataclass
class Tally:
    """What a change adds to the counters of its route (``adds``) and the
    marks it raises (``highs``: kept as the highest value written)."""

    adds: dict[str, float] = field(default_factory=dict)
    highs: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, amount: float) -> None:
        if amount:
            self.adds[name] = self.adds.get(name, 0) + amount

    def __bool__(self) -> bool:
        return bool(self.adds or self.highs)


def tally(change: JobChange, from_state: str, *, now: float, into: Tally) -> None:
    """Add to ``into`` what ``change`` (from ``from_state``) counts."""
    details = change.details or {}
    to = change.to
    if to is not None and to != from_state:
        if to in _TERMINAL:
            into.add(TRANSFERS + to, 1)
            if to == State.COMPLETED.value:
                into.highs[LAST_SUCCESS_AT] = now
                into.add(BYTES_VERIFIED, int(details.get("size") or 0))
                into.add(FILES_TRANSFERRED, int(details.get("files") or 1))
                into.add(TRANSFER_SECONDS, float(details.get("seconds") or 0.0))
        elif to == State.RETRY_WAIT.value:
            into.add(RETRIES, 1)
    if details.get("verify_mismatch"):
        into.add(VERIFY_FAILURES, 1)
    if change.event == "delete_source":
        into.add(SOURCE_DELETES, 1)
