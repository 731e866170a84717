"""The job store's jobs operations: reading a job, the compare-and-set that
changes it, :meth:`JobsPort.advance` (several changes and their audit events
in one transaction) and the runner's small updates."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ketter.audit.chain import Principal
from ketter.errors import InvalidTransition
from ketter.store.rows import JobRow


@dataclass(frozen=True)
class JobChange:
    """One compare-and-set of :meth:`JobsPort.advance`: ``to`` the new state
    (``None``: a note, the state stays), the ``event`` it records, the other
    columns it sets. ``only_unplaced``: refused once the job is placed
    (``placed_at`` set): a placed delivery only moves forward.
    ``only_uncancelled``: refused once a cancel was requested
    (``cancel_requested_at`` set): a step forward of a cancelled job."""

    to: str | None
    event: str
    details: dict[str, Any] | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    only_unplaced: bool = False
    only_uncancelled: bool = False


class JobsPort(Protocol):
    """The jobs operations of the job store."""

    def get_job(self, job_id: int) -> JobRow:
        """The job; raises :class:`ketter.store.rows.NoSuchJob` when there is none."""
        ...

    def find_job(self, job_id: int) -> JobRow | None:
        """The job, or ``None`` when there is none."""
        ...

    def job_ids(
        self,
        *,
        state: str | None = None,
        route: str | None = None,
        updated_since: float | None = None,
    ) -> list[int]:
        """Ids of the jobs in ``state`` / of ``route`` / updated at or after
        ``updated_since`` (``None``: any), in id order."""
        ...

    def compare_and_set(
        self,
        job_id: int,
        *,
        state: str,
        claim: str | None,
        values: dict[str, Any],
        only_unplaced: bool = False,
        only_uncancelled: bool = False,
    ) -> bool:
        """Set ``values`` (``jobs`` columns; another name raises ``ValueError``)
        on the job only if it is in ``state`` and held by ``claim`` (``None``:
        unclaimed), with ``only_unplaced`` not placed and with
        ``only_uncancelled`` not asked to cancel; ``False`` (nothing written)
        when no row matched."""
        ...

    def advance(
        self,
        job_id: int,
        state: str,
        changes: Sequence[JobChange],
        *,
        claim: str | None,
        now: float,
        durable: bool = False,
        route: str | None = None,
        attempt: int | None = None,
        actor: Principal | None = None,
    ) -> str:
        """Apply ``changes`` in order from ``state``, each a compare-and-set
        with ``updated_at = now`` and its audit event, all in one transaction
        (``durable``: on the disk when it returns): all or none. A change that
        matches no row raises :meth:`refusal`'s error and nothing is written.
        ``route``/``attempt`` (the claim's) spare a read; ``actor``: who the
        events are written for (default: the chain's). Returns the last state."""
        ...

    def refusal(
        self, job_id: int, from_state: str, to_state: str, claim: str | None
    ) -> InvalidTransition:
        """Why a compare-and-set from ``from_state`` to ``to_state`` under
        ``claim`` matched no row: no such job, :class:`ketter.errors.LostClaim`
        (another claim holds it), another state, placed, or
        :class:`ketter.errors.JobCancelled` (a cancel was requested)."""
        ...

    def set_attempt(self, job_id: int, claim: str, attempt: int) -> bool:
        """Set the job's attempt count if ``claim`` still holds it (an attempt
        given back); ``False`` when it does not."""
        ...

    def set_error(self, job_id: int, error: str) -> None:
        """Record ``error`` on the job (whatever its state and claim)."""
        ...

    def request_cancel(self, job_id: int, *, now: float, actor: Principal | None = None) -> bool:
        """Record an operator's cancel of the active, unplaced job (its
        ``cancel_requested_at``/``_by``) with its ``cancel_requested`` event,
        in one transaction; ``False`` (nothing written) when the job is
        missing, finished, placed, or asked already."""
        ...

    def cancel_requested(self, job_id: int) -> bool:
        """Whether a cancel of the job was requested (the worker's check
        while bytes move)."""
        ...
