"""The header every file and folder vecdoctor saves starts with.

    {"class": "Index", "format_version": 2, "vecdoctor_version": "0.2.0", ...}

``class`` names what the folder holds, ``format_version`` the layout of its files (raised when
a reader of the old layout could not read the new one), ``vecdoctor_version`` the writer.
Readers accept every format up to their own and refuse newer ones with a message that says
to upgrade; files written before the header existed read as format 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vecdoctor.errors import IncompatibleError, InputError

__all__ = ["header", "read_header"]


def header(kind: str, format_version: int) -> dict[str, Any]:
    """The header every folder or file vecdoctor saves starts with."""
    from vecdoctor import __version__

    return {"class": kind, "format_version": format_version, "vecdoctor_version": __version__}


def read_header(meta: Any, kind: str, latest: int, source: str | Path) -> int:
    """Check ``meta``'s header names ``kind``; return its format version (0.1.0 files: 1).

    A newer format than this vecdoctor reads is an :class:`IncompatibleError` that says to
    upgrade; anything else wrong is an :class:`InputError` naming ``source``.
    """
    if not isinstance(meta, dict):
        raise InputError(f"{source}: expected a JSON object describing a {kind}")
    named = meta.get("class", kind)
    if named != kind:
        raise InputError(f"{source}: holds a {named!r}, not a {kind}")
    version = meta.get("format_version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise InputError(f"{source}: format_version {version!r} is not a whole number")
    if version > latest:
        raise IncompatibleError(
            f"{source}: {kind} format {version} is newer than this vecdoctor reads ({latest}); "
            "upgrade vecdoctor"
        )
    return version
