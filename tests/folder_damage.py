"""Damage a saved folder the way a disk, a careless user or an attacker would: truncate or
flip bytes of one file, delete it, or put any JSON value at any key of a JSON file. The
property tests load the damaged folder and accept only a result or a clear error."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import strategies as st


def files_of(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=False)
    | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=6,
)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))


def damage_json(obj, data):  # type: ignore[no-untyped-def]
    """``obj`` with any JSON value put at any of its keys (or in its place)."""
    keys = data.draw(st.sampled_from(list(_paths(obj))), label="key")
    value = data.draw(json_values, label="value")
    if not keys:
        return value
    node = obj
    for k in keys[:-1]:
        node = node[k]
    node[keys[-1]] = value
    return obj


def damage(folder: Path, data, prefer: str | None = None) -> None:  # type: ignore[no-untyped-def]
    """Damage one file of ``folder``: truncate it, flip bytes, delete it, or put any JSON value
    at any key of a JSON file. ``prefer``: a file chosen half of the time (the one that
    describes the others)."""
    files = files_of(folder)
    weighted = files + [prefer] * len(files) if prefer in files else files
    name = data.draw(st.sampled_from(weighted), label="file")
    path = folder / name
    blob = path.read_bytes()
    kind = data.draw(st.sampled_from(["truncate", "flip", "delete", "json"]), label="kind")
    if kind == "json" and name.endswith(".json"):
        path.write_text(json.dumps(damage_json(json.loads(blob), data)))
    elif kind in {"truncate", "json"}:
        path.write_bytes(blob[: data.draw(st.integers(0, max(0, len(blob) - 1)), label="cut")])
    elif kind == "flip":
        arr = bytearray(blob)
        for _ in range(data.draw(st.integers(1, 8), label="n")):
            arr[data.draw(st.integers(0, len(arr) - 1))] = data.draw(st.integers(0, 255))
        path.write_bytes(bytes(arr))
    else:
        path.unlink()


