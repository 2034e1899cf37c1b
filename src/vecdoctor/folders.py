"""Reading folders nobody vouches for: model folders, converted graphs, rerankers, indexes.

Every reader of a folder goes through these helpers, so that a damaged or crafted folder gives
one clear :class:`~vecdoctor.errors.InputError` naming the file, and never a traceback of some
library, a hang or a file read from outside the folder:

- :func:`child`: ``folder/name`` confined to ``folder``, with no symbolic link along the way;
- :func:`read_object`: a JSON object from such a file (size-capped, any JSON error or nesting
  depth caught);
- :func:`value`: one typed, range-checked entry of such an object;
- :func:`library_errors`: what a third-party loader raises on damaged input, turned into an
  :class:`InputError` that says what to do.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from vecdoctor.errors import InputError, VecdoctorError

MAX_JSON_BYTES = 64 << 20
"""A settings file larger than this is refused before it is read (real ones are kilobytes;
a tokenizer.json is a few MiB)."""

_REQUIRED: Any = object()


def child(folder: str | Path, name: str, *, links: bool = False) -> Path:
    """``folder/name``, refusing names that leave the folder and symbolic links anywhere below
    ``folder`` (a link in a middle component leads outside it as well as a last one).

    ``links=True`` is for model folders in a third party's layout (a Hugging Face cache snapshot
    is a folder of links into its blob store): the name is still confined, links are followed.
    Folders vecdoctor writes never hold links and are always read with ``links=False``.
    """
    folder = Path(folder)
    rel = Path(name) if isinstance(name, str) else None
    if rel is None or not name or ".." in rel.parts or rel.is_absolute():
        raise InputError(f"{name!r}: path leaves the folder {folder}")
    candidate = folder
    for part in rel.parts:
        candidate = candidate / part
        if not links and candidate.is_symlink():
            raise InputError(f"{candidate}: is a symbolic link; saved folders must hold plain files")
    return candidate


def parse_json(text: str | bytes, where: str | Path) -> Any:
    """``json.loads`` with every way it fails (syntax, encoding, nesting depth) as one error."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError included
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise InputError(f"{where}: not valid JSON ({reason})") from None


def read_json(path: str | Path, *, links: bool = False) -> Any:
    """One JSON file: missing, a link, a folder, too large or not JSON are clear errors."""
    path = Path(path)
    if not links and path.is_symlink():
        raise InputError(f"{path}: is a symbolic link; saved folders must hold plain files")
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise InputError(f"{path}: {size} bytes, more than a settings file holds; it is damaged")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror})") from None
    return parse_json(data, path)


def read_object(
    folder: str | Path, name: str, *, optional: bool = False, links: bool = False
) -> dict[str, Any]:
    """The JSON object in ``folder/name`` (confined; no links unless ``links``, see
    :func:`child`); ``{}`` when ``optional`` and the file is absent."""
    path = child(folder, name, links=links)
    if optional and not path.exists():
        return {}
    obj = read_json(path, links=links)
    if not isinstance(obj, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(obj).__name__}; it is damaged")
    return obj


def value(
    obj: Mapping[str, Any],
    key: str,
    kind: type | tuple[type, ...],
    where: str | Path,
    default: Any = _REQUIRED,
    *,
    low: float | None = None,
    high: float | None = None,
) -> Any:
    """``obj[key]`` checked: of type ``kind`` (``bool`` is never an ``int``), finite, within
    [low, high]; ``default`` when absent or null (required when no default is given)."""
    raw = obj.get(key) if isinstance(obj, Mapping) else None
    if raw is None:
        if default is _REQUIRED:
            raise InputError(f"{where}: {key!r} is missing; the file is damaged or not vecdoctor's")
        return default
    kinds = kind if isinstance(kind, tuple) else (kind,)
    is_number = isinstance(raw, (int, float)) and not isinstance(raw, bool)
    if float in kinds and isinstance(raw, int) and not isinstance(raw, bool):
        raw = float(raw)
    ok = isinstance(raw, kinds) and not (isinstance(raw, bool) and bool not in kinds)
    if not ok:
        names = " or ".join(k.__name__ for k in kinds)
        raise InputError(f"{where}: {key!r} must be {names}, got {raw!r:.80}; the file is damaged")
    if is_number:
        number = float(raw)
        if not math.isfinite(number) or (low is not None and number < low) or (
            high is not None and number > high
        ):
            raise InputError(
                f"{where}: {key!r} = {raw!r} is out of range [{low}, {high}]; the file is damaged"
            )
    return raw


@contextlib.contextmanager
def library_errors(where: str | Path, what: str, fix: str) -> Iterator[None]:
    """Run a third-party loader on ``where``: whatever it raises on damaged input (a Rust panic
    of ``tokenizers``, ``safetensors`` header errors, torch size mismatches, recursion,
    a huge allocation...) becomes one :class:`InputError` naming the folder and the fix."""
    try:
        yield
    except VecdoctorError:
        raise
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - a panic of a Rust library is a BaseException
        first = (str(exc).strip().splitlines() or ["unreadable"])[0][:300]
        raise InputError(f"{where}: cannot be loaded as {what} ({type(exc).__name__}: {first}); {fix}") from None
