"""jobs.rollback_to: where a job in rolling_back goes once its undo is done
('retry_wait' or 'failed'), so a rollback interrupted by a crash finishes the
same way on restart."""

from peewee import TextField


def up(migrator, db):
    migrator.migrate(migrator.add_column("jobs", "rollback_to", TextField(null=True)))


def down(migrator, db):
    migrator.migrate(migrator.drop_column("jobs", "rollback_to"))
