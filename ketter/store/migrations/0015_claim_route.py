"""jobs_claim_route: the claims' search walks one route's active jobs best
first (replaces 0014's ``jobs_claim_order``, which had no route).

A claim always names its routes (``route IN (…)`` or ``route = …``), and
0014's index did not. On PostgreSQL, while the table had no statistics (a
new database, before autovacuum analyses it) the plan depended on the
table's size when the statement was planned (and a prepared statement keeps
its plan): in some runs of ``make bench-watcher``'s ``pg/1`` the planner
combined 0014's index with ``jobs_route_id`` (every row version of the
route, finished or not) in a bitmap scan, read every heap page of the
route's history and sorted: 0.4-0.9 ms a search, two of them under the
store's write turn (issue #18, seen with ``auto_explain``), against 0.01-0.08
ms in the runs where it walked 0014's index. With the route first the one
index answers a route's search in order and stops after the first claimable
rows, with statistics or without; several routes read only their active
entries and sort those. The condition is 0014's, word for word (SQLite uses a partial
index only for a query that repeats it).

Building it reads the whole ``jobs`` table once, with writes to it held
(a few seconds for a million jobs): on PostgreSQL a node still running
during another node's upgrade waits for it (docs/operations.md, "Upgrade").
"""

ACTIVE = (
    "WHERE (\"state\" IN ('detected', 'validated', 'packaged', 'transferring', "
    "'verifying', 'retry_wait', 'rolling_back'))"
)
INDEX = f'CREATE INDEX "jobs_claim_route" ON "jobs" ("route", "priority" DESC, "id") {ACTIVE}'
OLD = f'CREATE INDEX "jobs_claim_order" ON "jobs" ("priority" DESC, "id") {ACTIVE}'


def up(migrator, db):
    db.execute_sql(INDEX)
    db.execute_sql('DROP INDEX IF EXISTS "jobs_claim_order"')


def down(migrator, db):
    db.execute_sql(OLD)
    db.execute_sql('DROP INDEX IF EXISTS "jobs_claim_route"')
