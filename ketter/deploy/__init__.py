"""Deployment: the systemd units rendered from the config (see docs/operations.md)."""
