"""Ketter: verified, audited file transfers between studio network zones."""

__version__ = "0.1.0"
