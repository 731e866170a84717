"""Alerts to people (Slack, Teams, e-mail, webhooks) through apprise.

:func:`build_notifier` is the one place a notifier is built from the config;
it implements :class:`ketter.jobs.runner.Notifier`.
"""

from ketter.alerts.notifier import AppriseNotifier, build_notifier
from ketter.alerts.throttle import KINDS, Alert, Throttle

__all__ = ["KINDS", "Alert", "AppriseNotifier", "Throttle", "build_notifier"]
