"""Detection (R-W1…R-W7): find finished files and folders, record a
``detected`` job, ring the queue. The watcher never copies, hashes or deletes.

Entry point: :class:`ketter.watcher.service.Watcher` (``ketter watcher``).
"""

from ketter.watcher.service import Watcher

__all__ = ["Watcher"]
