"""The job store's operations, one protocol per area; composed into
:class:`ketter.store.port.JobStore`."""
