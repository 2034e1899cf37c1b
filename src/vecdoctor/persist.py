"""The header every file and folder vecdoctor saves starts with.

    {"class": "Index", "format_version": 2, "vecdoctor_version": "0.7.0", ...}

``class`` names what the folder holds, ``format_version`` the layout of its files (raised when
a reader of the old layout could not read the new one), ``vecdoctor_version`` the writer.
Readers accept every format up to their own and refuse newer ones with a message that says
to upgrade; files written before the header existed read as format 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vecdoctor.errors import IncompatibleError, InputError

__all__ = ["OutputKind", "check_output", "header", "read_header", "written_as"]


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


# -- what may be replaced -------------------------------------------------------------------------
@dataclass(frozen=True)
class OutputKind:
    """A kind of folder vecdoctor writes, recognised by the header in one of its files."""

    name: str
    header_file: str
    classes: tuple[str, ...]


INDEX = OutputKind("index folder", "config.json", ("Index",))
TRANSFORM = OutputKind("fitted transform", "config.json", ("Whitening", "AllButTheTop"))
CHECKUP = OutputKind("checkup report", "report.json", ("CheckupReport",))
DIAGNOSIS = OutputKind("diagnosis report", "report.json", ("DiagnosisReport",))
EVALUATION = OutputKind("evaluation", "results.json", ("EvaluationResults",))
FINETUNED = OutputKind("fine-tuned model", "vecdoctor_finetune.json", ("FinetuneResult",))
RERANKER = OutputKind("trained reranker", "vecdoctor_reranker.json", ("RerankerResult",))
CONVERTED = OutputKind("converted model", "vecdoctor_export.json", ("ConvertedModel",))
DRIFT = OutputKind("drift report", "report.json", ("DriftReport",))
MIGRATION = OutputKind("pipeline comparison", "report.json", ("MigrationReport",))
STATIC = OutputKind("static student", "static_model.json", ("StaticModel",))
LAYERS = OutputKind("layer-pruned student", "vecdoctor_student.json", ("LayerStudent",))


def written_as(folder: Path, kind: OutputKind) -> bool:
    """Whether ``folder`` holds a ``kind`` output that vecdoctor wrote (its header says so)."""
    import json

    path = Path(folder) / kind.header_file
    if path.is_symlink() or not path.is_file() or path.stat().st_size > 64 << 20:
        return False
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(meta, dict) and meta.get("class") in kind.classes


def _overlaps(output: Path, source: Path) -> bool:
    """Whether ``output`` is ``source`` or holds it (paths resolved)."""
    out, src = output.resolve(), source.resolve()
    return out == src or out in src.parents


def check_output(
    folder: str | Path, kind: OutputKind, force: bool = False, replace_same: bool = True,
    reads: Sequence[str | Path | None] = (),
) -> Path:
    """Refuse to write ``kind`` into ``folder`` when that would replace something vecdoctor
    did not write as the same kind of output.

    A missing or empty folder is fine; so is one holding a ``kind`` output (its header file
    names the class), unless ``replace_same`` is off (trained and converted models, which cost
    minutes to hours to make). Anything else needs ``force`` (``--force``), which replaces the
    folder and everything in it. A file or a symbolic link at that path is always an error, and
    so is a folder that is, or holds, one of the inputs ``reads`` (``--force`` would delete the
    data being read, so it is neither allowed nor suggested).
    """
    folder = Path(folder)
    if _overlaps(folder, Path.cwd()):
        raise InputError(f"{folder}: is the current folder (or holds it), which cannot be "
                         "replaced; write to a new folder, e.g. ./out")
    for path in reads:
        if path is not None and _overlaps(folder, Path(path)):
            raise InputError(
                f"{folder}: holds the input {path}, and writing there would delete the data "
                "being read; choose an output folder outside it")
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise InputError(f"{folder}: exists and is not a folder; choose another output path")
    if force or not folder.exists() or not any(folder.iterdir()):
        return folder
    if written_as(folder, kind):
        if replace_same:
            return folder
        raise InputError(
            f"{folder}: already exists and holds a {kind.name}; choose another output folder, "
            "or pass --force (force=True) to replace it"
        )
    raise InputError(
        f"{folder}: exists and is not a vecdoctor {kind.name}, so writing there would replace what "
        "it holds; choose another output folder, or pass --force (force=True) to replace it (what "
        "it holds is then moved aside, next to it, not deleted)"
    )
