"""Include/exclude matching on paths relative to the route source (R-W5).

Both inotify events and scans go through :class:`RoutePatterns`, so they
always agree. The semantics are watchdog's (``watchdog.utils.patterns``):
case-sensitive ``PurePosixPath.full_match`` globbing where ``**`` spans any
number of folders. ``match_any_paths`` re-translates every pattern into a
regular expression on every call (~110 µs a path with the default excludes,
i.e. 11 s per rescan of 100,000 files), so the patterns are translated once
here with watchdog's own ``translate`` — the very function
``watchdog.utils.patterns`` uses on Python < 3.13 — and a unit test checks
that the two agree.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from pathlib import PurePosixPath

from watchdog.utils.backwards_compat import translate  # type: ignore[attr-defined]

from ketter.config.schema import KETTER_TEMP_PATTERNS, RouteConfig

log = logging.getLogger(__name__)


def _compile(patterns: Iterable[str]) -> re.Pattern[str] | None:
    regexes = [
        translate(str(PurePosixPath(p)), recursive=True, include_hidden=True, seps="/")
        for p in patterns
    ]
    if not regexes:
        return None
    # translate() yields "(?s:...)\Z" pieces; one alternation scans a path once.
    return re.compile("|".join(f"(?:{r})" for r in regexes))


class RoutePatterns:
    """Which relative paths of a route are candidates.

    ``include`` empty means "everything" (watchdog's default of ``**``).
    Ketter's own temporaries (``.ketter-*``) are excluded whatever the
    route says, and so are ready markers (``NAME<marker>``): a marker is a
    signal about another file, never something to deliver.
    """

    def __init__(
        self, include: Iterable[str], exclude: Iterable[str], marker: str | None = None
    ) -> None:
        include_set = set(include) or {"**"}
        exclude_set = set(exclude) | set(KETTER_TEMP_PATTERNS)
        common = include_set & exclude_set
        if common:
            # watchdog raises ValueError on a pattern both included and
            # excluded; a config that says both means "not this", so exclude wins.
            log.warning(
                "patterns both included and excluded are excluded: %s", ", ".join(sorted(common))
            )
            include_set -= common
        self.include = tuple(sorted(include_set))
        self.exclude = tuple(sorted(exclude_set))
        self.marker = marker.encode() if marker else None
        self._include = _compile(self.include)
        self._exclude = _compile(self.exclude)
        # A folder matching "X" of an exclude "X/**" has every descendant
        # excluded: the scan need not enter it.
        self._prune = _compile(
            [p[:-3] for p in self.exclude if p.endswith("/**")] + list(KETTER_TEMP_PATTERNS)
        )

    @classmethod
    def for_route(cls, route: RouteConfig) -> RoutePatterns:
        return cls(route.include, route.exclude, route.ready_marker)

    def matches(self, relpath: bytes) -> bool:
        """True when ``relpath`` (bytes, relative to the route source) is
        included and not excluded. Markers are not matched here; see
        :meth:`is_candidate`."""
        text = str(PurePosixPath(os.fsdecode(relpath)))
        if self._include is None or not self._include.match(text):
            return False
        return not (self._exclude is not None and self._exclude.match(text))

    def is_marker(self, relpath: bytes) -> bool:
        return (
            self.marker is not None
            and relpath.endswith(self.marker)
            and len(os.path.basename(relpath)) > len(self.marker)
        )

    def is_candidate(self, relpath: bytes) -> bool:
        """A path that may become a job: matches the patterns, not a marker."""
        return not self.is_marker(relpath) and self.matches(relpath)

    def prune_dir(self, relpath: bytes) -> bool:
        """True when nothing below the folder ``relpath`` can be a candidate."""
        if self._prune is None:
            return False
        return bool(self._prune.match(str(PurePosixPath(os.fsdecode(relpath)))))

    def marker_for(self, relpath: bytes) -> bytes | None:
        """The marker path of candidate ``relpath`` (``NAME<marker>``)."""
        return relpath + self.marker if self.marker is not None else None

    def marked_path(self, marker_relpath: bytes) -> bytes:
        """The candidate a marker speaks for (its name without the suffix)."""
        assert self.marker is not None
        return marker_relpath[: -len(self.marker)]
