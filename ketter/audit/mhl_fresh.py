"""A new ASC MHL history (generation 1) written straight to the file.

The common case of a Ketter delivery: a folder that carries no ``ascmhl/``
history of its own. Its one generation lists every file as ``original`` in
Ketter's formats; there is nothing to verify against and no chain to
continue, so the library's model (one object tree per file, one lxml element
per ``<hash>``, ``textwrap`` over each) is not needed: it took 0.84 s of a
10,000-file unit (docs/performance.md). This writes the same bytes as
ascmhl 1.2 (``tests/integration/audit/test_mhl_fresh.py`` compares them byte
for byte, and checks the result with ``ascmhl`` itself and the XSDs), one
line at a time, and hashes the manifest for the chain's C4 as it goes.

Continuing an existing history stays with the library (:mod:`.mhl`).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from ascmhl.hasher import new_hasher_for_hash_type

#: What the XML cannot carry as text (lxml refuses it): left to the library,
#: whose refusal is the job's permanent error.
NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]|[\r\t\n]")
CHAIN = "ascmhl_chain.xml"
_HEAD = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<hashlist version="2.0" xmlns="urn:ASC:MHL:v2.0">\n'
)
_CHAIN_HEAD = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<ascmhldirectory xmlns="urn:ASC:MHL:DIRECTORY:v2.0">\n'
)
_BUFFER = 1 << 20


@dataclass(frozen=True)
class Listed:
    """One file of the generation."""

    #: Path below the folder, ``/``-separated, valid UTF-8.
    rel: str
    size: int
    mtime_ns: int
    #: format -> hex digest, for every format of the generation.
    hashes: dict[str, str]


def writable(names: Iterable[str]) -> bool:
    """Whether every name can be written as XML text here."""
    return not any(NOT_XML.search(n) for n in names)


def escape(text: str) -> str:
    """XML text as lxml writes it (``&``, ``<``, ``>``)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def local_offset() -> timezone:
    """ascmhl's offset for every date: the host's *current* one (it does not
    look at each date's own daylight saving), so Ketter's must match."""
    seconds = time.altzone if time.localtime().tm_isdst == 1 else time.timezone
    return timezone(timedelta(seconds=-seconds))


def write_fresh(
    folder: str,
    name: str,
    files: Sequence[Listed],
    formats: Sequence[str],
    patterns: Sequence[str],
    *,
    when: datetime,
    node: str,
    tool: tuple[str, str],
) -> str:
    """Write generation 1 (``folder/name``) and ``ascmhl_chain.xml``; returns
    the generation's path. ``folder`` is the new ``ascmhl/`` (created here);
    ``when`` a naive local time, as the library takes it. Not fsynced: the
    caller flushes what it wrote."""
    tz = local_offset()
    created = when.replace(microsecond=0, tzinfo=tz).isoformat()
    hashdate = when.replace(tzinfo=tz).isoformat()
    order = sorted(formats)
    os.mkdir(folder)
    path = os.path.join(folder, name)
    c4 = new_hasher_for_hash_type("c4")
    chunks: list[str] = []
    held = 0

    def put(text: str) -> None:
        nonlocal held
        chunks.append(text)
        held += len(text)
        if held >= _BUFFER:
            flush()

    def flush() -> None:
        nonlocal held
        data = "".join(chunks).encode("utf-8")
        chunks.clear()
        held = 0
        c4.update(data)
        out.write(data)

    with open(path, "wb") as out:
        c4.update(_HEAD)
        out.write(_HEAD)
        put(
            "  <creatorinfo>\n"
            f"    <creationdate>{created}</creationdate>\n"
            f"    <hostname>{escape(node)}</hostname>\n"
            f'    <tool version="{escape(tool[1])}">{escape(tool[0])}</tool>\n'
            "  </creatorinfo>\n"
            "  <processinfo>\n"
            "    <process>transfer</process>\n"
        )
        if patterns:
            put("    <ignore>\n")
            for p in patterns:
                put(f"      <pattern>{escape(p)}</pattern>\n")
            put("    </ignore>\n")
        else:
            put("    <ignore/>\n")
        put("  </processinfo>\n  <hashes>\n")
        mtimes: dict[int, str] = {}
        for f in files:
            stamp = mtimes.get(f.mtime_ns)
            if stamp is None:
                moment = datetime.fromtimestamp(f.mtime_ns / 1e9)
                stamp = mtimes[f.mtime_ns] = moment.replace(microsecond=0, tzinfo=tz).isoformat()
            size = f' size="{f.size}"' if f.size else ""
            put(
                "    <hash>\n"
                f'      <path{size} lastmodificationdate="{stamp}">{escape(f.rel)}</path>\n'
            )
            for fmt in order:
                put(
                    f'      <{fmt} action="original" hashdate="{hashdate}">'
                    f"{f.hashes[fmt]}</{fmt}>\n"
                )
            put("    </hash>\n")
        put("  </hashes>\n</hashlist>\n")
        flush()
    with open(os.path.join(folder, CHAIN), "wb") as chain:
        chain.write(
            _CHAIN_HEAD
            + (
                '  <hashlist sequencenr="1">\n'
                f"    <path>{escape(name)}</path>\n"
                f"    <c4>{c4.string_digest()}</c4>\n"
                "  </hashlist>\n"
                "</ascmhldirectory>\n"
            ).encode()
        )
    return path
