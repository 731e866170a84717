"""The audit trail: hash-chained events in the job store, shipped as JSON lines."""
