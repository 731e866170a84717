"""The job store's SQL, written once for SQLite and PostgreSQL (issue #18):
one mixin per area over :class:`ketter.store.sql.core.SqlCore`, in SQLite's
spelling, turned into each backend's by :mod:`ketter.store.dialect`. What
really differs stays in the backend's package (:mod:`ketter.store.sqlite`,
:mod:`ketter.store.postgres`): transactions and locking, the insert of a
new job, a few reads tuned for one engine's planner."""
