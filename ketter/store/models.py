"""peewee models of the job store (``state_dir/ketter.db``).

The schema is created by the numbered migrations in ``migrations/``, never by
``create_tables`` in production; ``tests/unit/test_migrations.py`` proves the
two agree. Times are REAL seconds since the Unix epoch (UTC); the
``job_history`` view shows them as ISO 8601. Paths are BLOBs holding the exact
bytes, each with a ``*_display`` TEXT column for people (see
:mod:`ketter.paths`).
"""

from __future__ import annotations

from peewee import (
    SQL,
    AutoField,
    BigIntegerField,
    BlobField,
    CompositeKey,
    DatabaseProxy,
    DoubleField,
    IntegerField,
    Model,
    ModelIndex,
    TextField,
)

from ketter.jobs.states import State

#: Bound to the real database by :func:`ketter.store.db.open_store`; nothing is
#: opened at import time.
database = DatabaseProxy()

#: States after which a job never changes again (its ``source_key`` may then be
#: used by a new job: the partial unique index only covers active jobs).
TERMINAL_STATES = ("completed", "failed", "superseded", "cancelled")
#: The others, in the order of :class:`ketter.jobs.states.State` (the claims'
#: queries name them in this order: SQLite uses the partial index
#: ``jobs_claim_order`` only for a query that repeats its condition).
ACTIVE_STATES = tuple(s.value for s in State if s.value not in TERMINAL_STATES)


class BaseModel(Model):
    class Meta:
        database = database
        legacy_table_names = False


class Job(BaseModel):
    """One transfer of one file or one folder; the row is the truth."""

    id = AutoField()
    route = TextField()
    mode = TextField()  # copy | move
    kind = TextField()  # file | folder
    source_path = BlobField()
    source_display = TextField()
    dest_path = BlobField(null=True)
    dest_display = TextField(null=True)
    source_key = TextField()
    source_size = BigIntegerField(null=True)
    source_mtime_ns = BigIntegerField(null=True)
    source_inode = BigIntegerField(null=True)
    source_dev = BigIntegerField(null=True)
    source_owner = TextField(null=True)
    dest_dev = BigIntegerField(null=True)
    size = BigIntegerField(default=0)
    file_count = IntegerField(default=1)
    state = TextField()
    attempt = IntegerField(default=0)
    next_attempt_at = DoubleField(null=True)
    priority = IntegerField(default=0)
    lease_owner = TextField(null=True)
    lease_expires_at = DoubleField(null=True)
    claim = TextField(null=True)
    bytes_done = BigIntegerField(default=0)
    progress_at = DoubleField(null=True)
    placed_at = DoubleField(null=True)
    placed_inode = BigIntegerField(null=True)
    sha256 = TextField(null=True)
    xxh128 = TextField(null=True)
    xxh64 = TextField(null=True)
    md5 = TextField(null=True)
    error = TextField(null=True)
    node = TextField()
    created_at = DoubleField()
    updated_at = DoubleField()
    started_at = DoubleField(null=True)
    completed_at = DoubleField(null=True)
    #: Where a job in ``rolling_back`` goes when the undo is done (0002).
    rollback_to = TextField(null=True)
    #: The source file's ctime when the worker inspected it (0003): part of
    #: its identity, compared again before a move deletes it.
    source_ctime_ns = BigIntegerField(null=True)
    #: The engine's copy + read-back time and bytes written of the attempt
    #: whose copy was verified (0005): job_history's ``seconds`` and
    #: ``mb_per_s``, free of waits on pauses, retries and re-queues.
    transfer_seconds = DoubleField(null=True)
    transfer_bytes = BigIntegerField(null=True)
    #: An operator asked to cancel the job (0009): when and who. The worker
    #: holding it rolls it back and ends it ``cancelled``; a step forward is
    #: refused from then on (:data:`ketter.jobs.states.FORWARD`).
    cancel_requested_at = DoubleField(null=True)
    cancel_requested_by = TextField(null=True)

    class Meta:
        table_name = "jobs"


# The jobs of a state, newest first (0012: was ``jobs_state_due``, on
# ``(state, next_attempt_at)``): `ketter jobs --state failed` stops after
# its page; the claims' due jobs are the few active ones, filtered by
# next_attempt_at from their rows.
Job.add_index(ModelIndex(Job, (Job.state, Job.id), name="jobs_state_id"))
# The scrape's count per route and state and its oldest waiting job per
# route (0010: was ``jobs_route_state``).
Job.add_index(
    ModelIndex(Job, (Job.route, Job.state, Job.created_at), name="jobs_route_state_created")
)
Job.add_index(ModelIndex(Job, (Job.source_key,), name="jobs_source_key"))
# A route's jobs newest first (0012): `ketter jobs --route`, an API token's
# routes. A job's route does not change: one entry per job.
Job.add_index(ModelIndex(Job, (Job.route, Job.id), name="jobs_route_id"))
# The read model's --since/--until (0012); created_at never changes.
Job.add_index(ModelIndex(Job, (Job.created_at,), name="jobs_created"))
# The claims' search (0014): the active jobs best first (highest priority,
# then oldest), walked in order and left after the first claimable ones; a
# partial index, so the history's finished jobs are not in it.
Job.add_index(
    ModelIndex(
        Job,
        (Job.priority.desc(), Job.id),
        name="jobs_claim_order",
        where=Job.state.in_(ACTIVE_STATES),
    )
)
# At most one active job per source identity: the watcher's idempotent insert
# relies on it, so a file detected twice is delivered once.
Job.add_index(
    ModelIndex(
        Job,
        (Job.source_key,),
        unique=True,
        name="jobs_active_source_key",
        where=Job.state.not_in(TERMINAL_STATES),
    )
)


def select_jobs(where: str, *params: object) -> list[Job]:
    """Jobs matching raw SQL ``where`` (may end with ORDER BY / LIMIT).

    Rows are turned into models with ``Job(**row)``: the hot paths (claims,
    the steps of a transfer) read jobs several times per transfer, and
    peewee's query builder and ``Job.raw`` cost five times the read itself.
    """
    cursor = database.obj.execute_sql(f"SELECT * FROM jobs WHERE {where}", params)
    names = [c[0] for c in cursor.description]
    return [Job(**dict(zip(names, row, strict=True))) for row in cursor.fetchall()]


def load_job(job_id: int) -> Job:
    """``Job.get_by_id`` through :func:`select_jobs`; raises
    ``Job.DoesNotExist`` like ``get_by_id``."""
    for job in select_jobs("id = ?", job_id):
        return job
    raise Job.DoesNotExist(f"job {job_id} does not exist")  # type: ignore[attr-defined]


class Event(BaseModel):
    """Append-only audit events; ``id`` is the sequence number of the chain."""

    id = AutoField()
    job_id = IntegerField(null=True, index=True)
    ts = DoubleField()
    event = TextField()
    route = TextField(null=True)
    from_state = TextField(null=True)
    to_state = TextField(null=True)
    attempt = IntegerField(null=True)
    node = TextField()
    pid = IntegerField()
    user = TextField()
    details = TextField()  # canonical JSON
    prev_hash = TextField()
    hash = TextField()

    class Meta:
        table_name = "events"


# docs/operations.md's "moved sources deleted today" (0012): one entry per
# moved job, none for the other events.
Event.add_index(
    ModelIndex(
        Event, (Event.ts,), name="events_delete_source", where=Event.event == "delete_source"
    )
)


class JobFile(BaseModel):
    """Per-file manifest of a folder job (and its checksums once copied)."""

    id = AutoField()
    job_id = IntegerField(index=True)
    relpath = BlobField()
    relpath_display = TextField()
    size = BigIntegerField()
    mtime_ns = BigIntegerField()
    mode = IntegerField()
    inode = BigIntegerField(null=True)
    sha256 = TextField(null=True)
    xxh128 = TextField(null=True)
    xxh64 = TextField(null=True)
    #: The file's ctime in the manifest (0003); see ``Job.source_ctime_ns``.
    ctime_ns = BigIntegerField(null=True)

    class Meta:
        table_name = "job_files"


class RouteStatus(BaseModel):
    """Whether a route is paused (share down, disk full) and why."""

    route = TextField(primary_key=True)
    paused = IntegerField(default=0)
    reason = TextField(null=True)
    since = DoubleField(null=True)
    updated_at = DoubleField()
    #: Paused for a full destination: the bytes the job that did not fit needs
    #: free on top of ``min_free``; the route resumes once they are.
    room_needed = BigIntegerField(null=True)
    #: Pauses for room with nothing of the route delivered in between (0008):
    #: the first one alerts, the later ones back off (``resume_at``).
    room_pauses = IntegerField(default=0)
    #: When the last pause for room began (kept once resumed): a job of the
    #: route completed after it ends the episode.
    room_paused_at = DoubleField(null=True)
    #: The sweep does not resume the route before this time (the backoff of a
    #: destination that refuses writes while showing free space: a quota).
    resume_at = DoubleField(null=True)
    #: An operator hold (0009, ``ketter pause``): the route takes no new
    #: claims until ``ketter resume``; with its reason, who and since. Kept
    #: apart from ``paused`` so that nothing automatic (the sweep's resume of
    #: an outage pause) lifts it.
    held = IntegerField(default=0)
    held_reason = TextField(null=True)
    held_by = TextField(null=True)
    held_since = DoubleField(null=True)

    class Meta:
        table_name = "route_status"


class Heartbeat(BaseModel):
    """Liveness of a process (watcher, workers) or of a route's watch."""

    id = AutoField()
    component = TextField()  # watcher | workers | route:<name>
    node = TextField()
    pid = IntegerField()
    ts = DoubleField()
    details = TextField()  # JSON

    class Meta:
        table_name = "heartbeats"


Heartbeat.add_index(
    ModelIndex(
        Heartbeat,
        (Heartbeat.component, Heartbeat.node),
        unique=True,
        name="heartbeats_component_node",
    )
)


class ApiToken(BaseModel):
    """An API token (0011): its SHA-256 only, never the secret, what it may
    do (scopes) and on which routes (globs), and its life (expiry,
    revocation). Revoked rows stay: the history of who could do what."""

    id = AutoField()
    name = TextField()
    secret_sha256 = TextField()
    scopes = TextField()  # JSON array of scope names
    routes = TextField()  # JSON array of route globs
    created_at = DoubleField()
    created_by = TextField()
    expires_at = DoubleField(null=True)
    revoked_at = DoubleField(null=True)
    revoked_by = TextField(null=True)
    #: Refreshed at most once a minute (no write per request).
    last_used_at = DoubleField(null=True)

    class Meta:
        table_name = "api_tokens"


ApiToken.add_index(
    ModelIndex(ApiToken, (ApiToken.secret_sha256,), unique=True, name="api_tokens_secret_sha256")
)
# A name is unique among the tokens not revoked: `token revoke NAME` names
# one token, and a revoked name may be given to its replacement.
ApiToken.add_index(
    ModelIndex(
        ApiToken,
        (ApiToken.name,),
        unique=True,
        name="api_tokens_live_name",
        where=ApiToken.revoked_at.is_null(),
    )
)


class Counter(BaseModel):
    """A per-route running total for ``/metrics`` (0010), incremented in the
    transaction of the transition it counts; never decreased, never pruned.
    ``name``: :mod:`ketter.store.composite.counting`."""

    route = TextField()
    name = TextField()
    value = DoubleField(default=0)

    class Meta:
        table_name = "counters"
        primary_key = CompositeKey("route", "name")


class JobCount(BaseModel):
    """How many jobs each route has in each state (0010): kept by triggers on
    ``jobs`` in the statement that writes a job, so a scrape reads a few rows
    instead of counting a million."""

    route = TextField()
    state = TextField()
    jobs = IntegerField()
    #: The sum of their ``size`` (0012): ``ketter status``'s bytes per state.
    bytes = BigIntegerField(default=0, constraints=[SQL("DEFAULT 0")])

    class Meta:
        table_name = "job_counts"
        primary_key = CompositeKey("route", "state")


class ShareMarker(BaseModel):
    """The id of a route root's marker file (0013): the share every node
    must find there (:mod:`ketter.jobs.shares`)."""

    route = TextField()
    side = TextField()  # source | destination
    path = TextField()  # the root, as the first node saw it
    marker = TextField()
    node = TextField()  # the node that wrote the marker
    created_at = DoubleField()

    class Meta:
        table_name = "share_markers"
        primary_key = CompositeKey("route", "side")


MODELS = (Job, Event, JobFile, RouteStatus, Heartbeat, ApiToken, Counter, JobCount, ShareMarker)
