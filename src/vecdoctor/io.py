"""Crash-safe file and directory writes: write to a temporary sibling, fsync, then rename."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from vecdoctor.errors import InputError


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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # the mode a plain open() would give, not mkstemp's 0600
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None


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
    except (ValueError, OSError, EOFError) as exc:
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


@contextlib.contextmanager
def atomic_dir(target: Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``target`` in one rename.

    If the block raises (or the process dies), ``target`` is left exactly as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and not target.is_dir():
        raise InputError(f"{target}: exists and is not a folder")
    if target.exists() and not overwrite:
        raise InputError(f"{target}: already exists; pass overwrite=True or choose another path")
    if not os.access(target.parent, os.W_OK):
        raise InputError(f"{target.parent}: folder is not writable")
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    tmp.chmod(0o777 & ~_umask())
    try:
        yield tmp
        for f in tmp.iterdir():
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        if target.exists():
            _exchange(tmp, target)  # tmp now holds the old version
            _fsync_dir(target.parent)
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.replace(tmp, target)
            _fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def safe_child(folder: Path, name: str) -> Path:
    """``folder/name`` refusing names that leave the folder or point through a symlink."""
    folder = Path(folder)
    candidate = folder / name
    if ".." in Path(name).parts or Path(name).is_absolute():
        raise InputError(f"{name!r}: path leaves the folder {folder}")
    if candidate.is_symlink():
        raise InputError(f"{candidate}: is a symbolic link; saved folders must hold plain files")
    return candidate
