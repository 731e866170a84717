"""The job store's jobs operations: reading a job, the compare-and-set that
changes it, :meth:`JobsPort.advance` (several changes and their audit events
in one transaction) and the runner's small updates."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ketter.errors import InvalidTransition
from ketter.store.rows import JobRow


@dataclass(frozen=True)
class JobChange:
    """One compare-and-set of :meth:`JobsPort.advance`: ``to`` the new state
    (``None``: a note, the state stays), the ``event`` it records, the other
    columns it sets. ``only_unplaced``: refused once the job is placed
    (``placed_at`` set): a placed delivery only moves forward."""

    to: str | None
    event: str
    details: dict[str, Any] | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    only_unplaced: bool = False


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
    ) -> bool:
        """Set ``values`` (``jobs`` columns; another name raises ``ValueError``)
        on the job only if it is in ``state`` and held by ``claim`` (``None``:
        unclaimed) and, with ``only_unplaced``, not placed; ``False`` (nothing
        written) when no row matched."""
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
    ) -> str:
        """Apply ``changes`` in order from ``state``, each a compare-and-set
        with ``updated_at = now`` and its audit event, all in one transaction
        (``durable``: on the disk when it returns): all or none. A change that
        matches no row raises :meth:`refusal`'s error and nothing is written.
        ``route``/``attempt`` (the claim's) spare a read. Returns the last state."""
        ...

    def refusal(
        self, job_id: int, from_state: str, to_state: str, claim: str | None
    ) -> InvalidTransition:
        """Why a compare-and-set from ``from_state`` to ``to_state`` under
        ``claim`` matched no row: no such job, :class:`ketter.errors.LostClaim`
        (another claim holds it), another state, or placed."""
        ...

    def set_attempt(self, job_id: int, claim: str, attempt: int) -> bool:
        """Set the job's attempt count if ``claim`` still holds it (an attempt
        given back); ``False`` when it does not."""
        ...

    def set_error(self, job_id: int, error: str) -> None:
        """Record ``error`` on the job (whatever its state and claim)."""
        ...
