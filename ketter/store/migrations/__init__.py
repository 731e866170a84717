"""Numbered schema migrations of the job store, applied by ``ketter db upgrade``.

Each ``NNNN_name.py`` defines ``up(migrator, db)`` (playhouse.migrations). The
files are frozen: they never import ``ketter.store.models``, so changing a model
later cannot rewrite history. This folder ships inside the wheel and is found
through ``importlib.resources``.
"""
