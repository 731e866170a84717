"""Rules for the text a config may carry into files Ketter writes.

Paths and names end up in systemd units (``ketter deploy units``), in log
lines and in the audit chain. A newline in ``state_dir`` once made the
rendered units carry a directive of the config author's choosing
(``ExecStartPre=…``), so control characters are refused at load, and the
unit renderer refuses them again for a config built in code.
"""

from __future__ import annotations

import unicodedata

#: Characters a route name may not hold besides control characters: the
#: name is typed on shell command lines (``ketter jobs --route NAME``) and
#: used in alert titles, so nothing a shell would interpret.
SHELL_CHARS = frozenset("$`\\\"';|&<>*?(){}[]!#~")

NAME_RULE = (
    "a route name must be non-empty text without '/', surrounding spaces, "
    "control characters (newline, tab…) or shell characters ($ ` \\ \" ' ; | & "
    "< > * ? ( ) { } [ ] ! # ~)"
)


def control_char(text: str) -> str | None:
    """A description of the first control character in ``text``, else None."""
    for index, char in enumerate(text):
        if unicodedata.category(char) == "Cc":
            return f"{_name(char)} at character {index + 1}"
    return None


def name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid route name, None when it is."""
    if not name or "/" in name or name.strip() != name:
        return f"{NAME_RULE}, got {name!r}"
    bad = control_char(name)
    if bad is not None:
        return f"{NAME_RULE}; found {bad} in {name!r}"
    shell = sorted({c for c in name if c in SHELL_CHARS})
    if shell:
        return f"{NAME_RULE}; found {' '.join(shell)} in {name!r}"
    return None


def _name(char: str) -> str:
    names = {"\n": "a newline", "\r": "a carriage return", "\t": "a tab", "\x00": "a NUL byte"}
    return names.get(char, f"control character U+{ord(char):04X}")
