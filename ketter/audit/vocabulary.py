"""The closed vocabulary of audit event names (``events.event``)."""

from __future__ import annotations

EVENTS: frozenset[str] = frozenset(
    {
        "detect",
        "enqueue",
        "claim",
        "prepare",
        "package",
        "copy",
        "verify",
        "place",
        "complete",
        "retry",
        "fail",
        "supersede",
        "rollback",
        "delete_source",
        "delete_marker",
        "requeue",
        "skip",
        "resume",
        "recover",
        "stalled",
        "release",
        "route_paused",
        "route_resumed",
        "watcher_started",
        "watcher_stopped",
        "watch_lost",
        "watch_restored",
        "config_loaded",
        "workers_started",
        "workers_stopped",
        "api_started",
        "api_stopped",
        "warning",
        "rotate",
        "audit_log_reopened",
        "token_created",
        "token_revoked",
        # The HTTP API: a mutating call served, a call refused, an
        # authentication that failed (ketter/api/guard.py).
        "api_call",
        "api_denied",
        "api_auth_failed",
        "cancel_requested",
        "cancel",
        "route_held",
        "route_released",
    }
)
