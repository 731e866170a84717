"""Route globs: the routes a token may act on, as shell patterns with
:func:`fnmatch.fnmatchcase` semantics (``dub-*``, ``qc-?``, ``*``), matched
against the whole route name, case-sensitively."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

from ketter.config.text import control_char
from ketter.errors import KetterError

#: The pattern characters a glob may hold; route names may hold none of
#: them (:data:`ketter.config.text.SHELL_CHARS`).
GLOB_CHARS = frozenset("*?[]!")
#: Never in a glob: the separator of ``--routes``, and what no route name holds.
_REFUSED = frozenset(",/$`\\\"';|&<>(){}#~")
#: The longest glob accepted (a route name is short; this bounds the work).
MAX_GLOB = 200


class InvalidRouteGlob(KetterError, ValueError):
    """Not a route glob."""


def parse_route_globs(value: str | Iterable[str]) -> tuple[str, ...]:
    """The globs of ``dub-*,qc`` (or of a list), without duplicates, in the
    order given. ``*`` is every route, and must be given as such: an empty
    list means no route. Raises :class:`InvalidRouteGlob` with the reason."""
    names = value.split(",") if isinstance(value, str) else list(value)
    globs: list[str] = []
    for raw in names:
        glob = raw.strip() if isinstance(value, str) else raw
        if isinstance(value, str) and not glob:
            continue
        problem = glob_problem(glob)
        if problem is not None:
            raise InvalidRouteGlob(problem)
        if glob not in globs:
            globs.append(glob)
    return tuple(globs)


def glob_problem(glob: str) -> str | None:
    """Why ``glob`` is not a route glob, None when it is."""
    rule = (
        "a route glob is a route name, or a pattern with * ? [...] "
        "(dub-*, qc-?, * for every route), without , / spaces around it, "
        "control or other shell characters"
    )
    if not glob or glob.strip() != glob or len(glob) > MAX_GLOB:
        return f"{rule}; got {glob!r}"
    bad = control_char(glob)
    if bad is not None:
        return f"{rule}; found {bad} in {glob!r}"
    refused = sorted({c for c in glob if c in _REFUSED})
    if refused:
        return f"{rule}; found {' '.join(refused)} in {glob!r}"
    return None


def matches(route: str, globs: Iterable[str]) -> bool:
    """Whether ``route`` is matched by one of ``globs`` (none: never)."""
    return any(fnmatch.fnmatchcase(route, glob) for glob in globs)
