"""What every step of an attempt stands on: the claimed job, its route and
spec, the job store, and the bookkeeping that commits a step with its audit
event (:class:`AttemptBase`). The steps themselves are
:class:`ketter.jobs.steps.Attempt`, the placement and what follows it
:class:`ketter.jobs.finishing.Finishing`, recovery and rollback
:class:`ketter.jobs.recovery.Recovery`."""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any

from ketter.config import RouteConfig
from ketter.engine.paths import join, split
from ketter.engine.source import SourcePlan
from ketter.engine.spec import TransferSpec
from ketter.errors import PermanentError
from ketter.jobs.claim import Claimed
from ketter.jobs.lease import JobContext
from ketter.jobs.states import State
from ketter.jobs.transitions import Step, advance
from ketter.paths import readable
from ketter.store.rows import JobRow

if TYPE_CHECKING:
    from ketter.jobs.runner import JobRunner
    from ketter.store.port import JobStore

S = State
IN_FLIGHT = (S.VALIDATED.value, S.PACKAGED.value, S.TRANSFERRING.value, S.VERIFYING.value)


class AttemptBase:
    """One claimed run of a job on the job store ``store``: its state and
    the commits of its steps."""

    def __init__(
        self,
        runner: JobRunner,
        job: JobRow,
        claimed: Claimed,
        route: RouteConfig,
        spec: TransferSpec,
        ctx: JobContext,
        *,
        store: JobStore,
    ) -> None:
        self.store = store
        self.runner = runner
        self.job = job
        self.claim = claimed.claim
        self.claimed = claimed
        self.route = route
        self.spec = spec
        self.ctx = ctx
        self.state = State(job.state)
        #: The columns this attempt's steps wrote (as its store calls
        #: returned), over the row it claimed: :meth:`written_row`.
        self.written: dict[str, Any] = {}
        self.plan: SourcePlan | None = None
        self.source = bytes(job.source_path)
        self.final = self._final_path()

    def now(self) -> float:
        return self.runner.clock()

    def to(
        self,
        new: State,
        *,
        event: str | None = None,
        details: dict | None = None,
        fsync: bool = False,
        **fields: Any,
    ) -> None:
        """One transition (see :func:`ketter.jobs.transitions.transition`)."""
        self.advance([Step(new, event, details, fields)], fsync=fsync)

    def advance(self, steps: list[Step], *, fsync: bool = False) -> None:
        """Several steps in one commit (see :func:`ketter.jobs.transitions.advance`)."""
        state = advance(
            self.store,
            self.job.id,
            self.state,
            steps,
            claim=self.claim,
            now=self.now(),
            fsync=fsync,
            route=self.job.route,
            attempt=self.claimed.attempt,
        )
        for step in steps:
            self.written.update(step.fields)
        self.state = state

    def written_row(self) -> JobRow:
        """The job's row as this attempt's steps left it: the row it claimed
        with the columns its steps wrote. No one else writes those while the
        claim holds (a renewal writes only the lease and the progress)."""
        return dataclasses.replace(self.job, **self.written, state=self.state.value)

    def note(
        self, event: str, *, details: dict | None = None, fsync: bool = False, **fields: Any
    ) -> None:
        """A step that keeps the state (see :func:`ketter.jobs.transitions.mark`)."""
        self.advance([Step(None, event, details, fields)], fsync=fsync)

    def _final_path(self) -> bytes:
        if self.job.dest_path is not None:
            return bytes(self.job.dest_path)
        root = os.fsencode(self.route.source)
        rel = os.path.relpath(self.source, root)
        if rel.startswith(b".."):
            raise PermanentError(
                f"source {readable(self.source)!r} is not under the route's "
                f"source {self.route.source}"
            )
        return join(os.fsencode(self.route.destination), rel)

    @property
    def dest_dir(self) -> bytes:
        return split(self.final)[0]
