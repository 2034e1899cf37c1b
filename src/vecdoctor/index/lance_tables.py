"""Folders saved beside a LanceDB table (the fitted transform, the baseline) as companion
tables of (file name, bytes) rows."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from vecdoctor.errors import IncompatibleError, InputError

TRANSFORM_SUFFIX = "__transform"
BASELINE_SUFFIX = "__baseline"


def _has_table(db: Any, name: str) -> bool:
    try:
        db.open_table(name)
    except (ValueError, FileNotFoundError):
        return False
    return True


def _save_folder(db: Any, name: str, folder: Path) -> None:
    """Every file of ``folder`` as one row (file name, bytes) of the table ``name``."""
    import pyarrow as pa

    files = sorted(p for p in folder.iterdir() if p.is_file())
    data = pa.table({"file": [p.name for p in files],
                     "data": pa.array([p.read_bytes() for p in files], pa.binary())})
    db.create_table(name, data=data, mode="overwrite")


def _unpack(db: Any, name: str, into: Path) -> None:
    """The rows of companion table ``name`` written back as files into ``into``; file names
    must be plain names (a table from elsewhere is data, never paths)."""
    rows = db.open_table(name).to_arrow()
    if rows.column_names != ["file", "data"]:
        raise InputError(f"{name}: columns {rows.column_names}, expected file and data; "
                         "rebuild the table")
    for file, data in zip(rows.column("file").to_pylist(), rows.column("data").to_pylist(),
                          strict=True):
        if not isinstance(file, str) or not isinstance(data, bytes) or not file \
                or Path(file).name != file or file in {".", ".."}:
            raise InputError(f"{name}: bad file name {file!r}; rebuild the table")
        (into / file).write_bytes(data)


def save_transform(db: Any, table: str, transform: Any) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "transform"
        transform.save(folder)
        _save_folder(db, table + TRANSFORM_SUFFIX, folder)


def _load_transform(db: Any, table: str, fingerprint: str | None) -> Any:
    from vecdoctor.fix.transform import load_transform

    if not _has_table(db, table + TRANSFORM_SUFFIX):
        raise InputError(
            f"table {table!r} names a fitted transform but {table + TRANSFORM_SUFFIX!r} is "
            "missing; rebuild the table"
        )
    with tempfile.TemporaryDirectory() as tmp:
        _unpack(db, table + TRANSFORM_SUFFIX, Path(tmp))
        return load_transform(tmp, fingerprint=fingerprint)


def save_baseline(index: Any, baseline: Any) -> None:
    """Store ``baseline`` beside the table (``<table>__baseline``) and attach it to ``index``."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "baseline"
        baseline.save(folder)
        _save_folder(index.db, index.name + BASELINE_SUFFIX, folder)
    index.baseline = baseline


def _load_baseline(db: Any, table: str, fingerprint: str, uri: Any) -> Any:
    """The table's baseline, or ``None`` when it has none (built before 0.3.0)."""
    from vecdoctor.index.baseline import Baseline

    if not _has_table(db, table + BASELINE_SUFFIX):
        return None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            _unpack(db, table + BASELINE_SUFFIX, Path(tmp))
            baseline = Baseline.load(tmp)
            baseline.check(fingerprint, f"{uri}/{table}{BASELINE_SUFFIX}")
            return baseline
    except (InputError, IncompatibleError) as exc:
        raise type(exc)(f"{exc}; compute it again with `vecdoctor baseline {uri}`") from None
