"""Crash-safe file and directory writes: write to a temporary sibling, fsync, then rename."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from vecdoctor.errors import InputError

logger = logging.getLogger(__name__)

_DISK_ERRORS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EFBIG: "the file size limit was reached",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}


def _write_error(target: Path, exc: OSError) -> InputError:
    """A clear error for a failed write; the previous version of ``target`` is untouched."""
    reason = _DISK_ERRORS.get(exc.errno or 0, exc.strerror or str(exc))
    return InputError(
        f"{target}: could not be written ({reason}: {exc.filename or target}); "
        "the previous version is unchanged; free space or choose another output folder"
    )


def _temp_prefix(name: str) -> str:
    """Temporary siblings carry the writer's pid, so a later writer can remove a dead one's."""
    return f".{name}.{os.getpid()}."


def _sweep_stale(parent: Path, name: str) -> None:
    """Remove temporary siblings of ``name`` left by writers that were killed mid-write."""
    prefix = f".{name}."
    try:
        entries = list(parent.iterdir())
    except OSError:
        return
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        parts = entry.name[len(prefix) :].split(".")  # PID.RANDOM.tmp, RANDOM has no dots
        if len(parts) != 3 or parts[2] != "tmp" or not parts[0].isdigit():
            continue
        pid_text = parts[0]
        if int(pid_text) == os.getpid():
            continue
        try:
            os.kill(int(pid_text), 0)
            continue  # the writer is alive
        except ProcessLookupError:
            pass
        except OSError:
            continue
        logger.info("removing %s left by an interrupted write", entry)
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()


def _fsync_tree(root: Path) -> None:
    """fsync every file and folder under ``root`` (children before parents)."""
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            with open(os.path.join(dirpath, name), "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _sweep_stale(path.parent, path.name)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path.name), suffix=".tmp")
    except OSError as exc:
        raise _write_error(path, exc) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # the mode a plain open() would give, not mkstemp's 0600
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in _DISK_ERRORS:
            raise _write_error(path, exc) from None
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def save_npy(path: Path, array: np.ndarray) -> None:
    """Write one array as .npy, fsynced; callers write into a temporary directory."""
    with open(path, "wb") as fh:
        np.save(fh, np.ascontiguousarray(array), allow_pickle=False)
        fh.flush()
        os.fsync(fh.fileno())


def load_npy(path: Path, mmap: bool = False) -> np.ndarray:
    """Read a .npy written by :func:`save_npy`; a missing or truncated file is a clear error."""
    path = Path(path)
    if path.is_symlink():
        raise InputError(f"{path}: is a symbolic link; saved folders must hold plain files")
    if not path.is_file():
        raise InputError(f"{path}: file not found; the saved folder is incomplete")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001
        # a damaged header reaches numpy's literal parser, which fails with SyntaxError,
        # tokenize.TokenError, TypeError, MemoryError...: all mean the same to the caller
        raise InputError(f"{path}: cannot be read ({exc}); the file is truncated or corrupt") from None


def _exchange(a: Path, b: Path) -> None:
    """Swap two paths in one atomic step (Linux renameat2 RENAME_EXCHANGE).

    Where the call is unavailable, fall back to two renames; the short gap between them is
    the only moment where ``b`` does not exist.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        renameat2 = None
    if renameat2 is not None:
        at_fdcwd, rename_exchange = -100, 2
        rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
        if rc == 0:
            return
    side = a.with_name(a.name + ".swap")
    os.replace(b, side)
    os.replace(a, b)
    os.replace(side, a)


WRITTEN = frozenset({
    "config.json", "docs.jsonl", "bm25", "vectors.npy", "codes.npy", "quantizer", "ann.faiss",
    "chunk_owners.npy", "transform", "baseline", "report.json", "report.html", "pipeline.json",
    "runs", "queries", "results.json", "mean.npy", "components.npy", "eigenvalues.npy",
})
"""Names of what vecdoctor writes in its output folders: an entry of an old version that is
neither one of these nor in the new version is somebody else's, and is kept (:func:`swap_in`)."""


def swap_in(tmp: Path, target: Path) -> Path | None:
    """Put the complete folder ``tmp`` at ``target`` in one atomic step; drop the old version,
    unless it holds entries vecdoctor did not write (a user's notes left in an index, or a
    folder replaced with ``--force``): then the old version is moved aside, next to the target,
    and its path returned and logged, so nothing is lost for good.

    ``tmp`` must be a sibling of ``target`` (same file system).
    """
    if not target.exists():
        os.replace(tmp, target)
        _fsync_dir(target.parent)
        return None
    _exchange(tmp, target)  # tmp now holds the old version
    _fsync_dir(target.parent)
    foreign = sorted(p.name for p in tmp.iterdir()
                     if p.name not in WRITTEN and not (target / p.name).exists())
    if not foreign:
        shutil.rmtree(tmp, ignore_errors=True)
        return None
    aside = target.parent / f"{target.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}"
    n = 1
    while aside.exists():
        n += 1
        aside = target.parent / f"{target.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}-{n}"
    os.replace(tmp, aside)
    _fsync_dir(target.parent)
    shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
    logger.warning("%s held what vecdoctor did not write (%s): the previous folder is kept as "
                   "%s", target, shown, aside)
    return aside


@contextlib.contextmanager
def atomic_dir(target: Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``target`` in one rename.

    If the block raises (or the process dies), ``target`` is left exactly as it was. A full
    disk, a size limit or a read-only folder becomes an :class:`InputError` saying so.
    Temporary folders left by writers killed mid-write are removed on the next write.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _write_error(target, exc) from None
    if target.exists() and not target.is_dir():
        raise InputError(f"{target}: exists and is not a folder")
    if target.exists() and not overwrite:
        raise InputError(f"{target}: already exists; pass overwrite=True or choose another path")
    if not os.access(target.parent, os.W_OK):
        raise InputError(f"{target.parent}: folder is not writable")
    _sweep_stale(target.parent, target.name)
    try:
        tmp = Path(
            tempfile.mkdtemp(dir=target.parent, prefix=_temp_prefix(target.name), suffix=".tmp")
        )
        tmp.chmod(0o777 & ~_umask())
    except OSError as exc:
        raise _write_error(target, exc) from None
    try:
        try:
            yield tmp
            _fsync_tree(tmp)
        except OSError as exc:
            if exc.errno in _DISK_ERRORS:
                raise _write_error(target, exc) from None
            raise
        swap_in(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
