"""The ``ketter`` command line."""

from ketter.cli.main import main

__all__ = ["main"]
