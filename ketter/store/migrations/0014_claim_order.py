"""jobs_claim_order: the claims' search walks the active jobs best first
(issue #18: on PostgreSQL each search sorted every waiting job, 1.6 ms a
search with 2,000 files queued, under the store's write turn).

A partial index on ``jobs (priority DESC, id)`` over the active states only:
a claim (``claim_next``'s due jobs, ``claim_batch``'s fresh small files)
reads it in order and stops after the first claimable rows; the history's
finished jobs are not in it (an entry per job while it runs, dropped when it
finishes). The queries repeat the condition word for word
(:mod:`ketter.store.sql.leases`): SQLite uses a partial index only then.
The list of states is the models' (a state added later changes the models,
and the schema test then asks for a migration).

Building it reads the whole ``jobs`` table once, with writes to it held
(a few seconds for a million jobs): on PostgreSQL a node still running
during another node's upgrade waits for it (docs/operations.md, "Upgrade").
"""

INDEX = (
    'CREATE INDEX "jobs_claim_order" ON "jobs" ("priority" DESC, "id") '
    "WHERE (\"state\" IN ('detected', 'validated', 'packaged', 'transferring', "
    "'verifying', 'retry_wait', 'rolling_back'))"
)


def up(migrator, db):
    db.execute_sql(INDEX)


def down(migrator, db):
    db.execute_sql('DROP INDEX IF EXISTS "jobs_claim_order"')
