"""Documents of an index: validation and the docs.jsonl file (one object a line, row order)."""

from __future__ import annotations

import json
import platform
from collections.abc import Iterable, Sequence
from pathlib import Path

from vecdoctor.data import Document
from vecdoctor.errors import InputError


def versions() -> dict[str, str]:
    """Versions of the libraries that shape an index, for config.json."""
    from importlib import metadata

    from vecdoctor import __version__

    out = {"vecdoctor": __version__, "python": platform.python_version()}
    for dist in ("numpy", "bm25s", "faiss-cpu", "torch", "sentence-transformers"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def as_documents(docs: Iterable[Document]) -> list[Document]:
    out = list(docs)
    for i, d in enumerate(out):
        if not isinstance(d, Document):
            raise TypeError(
                f"documents[{i}] is {type(d).__name__}; expected vecdoctor.data.Document"
            )
        if not isinstance(d.id, str) or not d.id:
            raise InputError(f"documents[{i}] has an empty or non-string id {d.id!r}")
    return out


def duplicates(ids: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    dup: list[str] = []
    for i in ids:
        if i in seen and i not in dup:
            dup.append(i)
        seen.add(i)
    return dup


def preview(items: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(repr(x) for x in items[:n])
    return shown + (f" and {len(items) - n} more" if len(items) > n else "")


def write_docs(path: Path, docs: Sequence[Document]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for d in docs:
            record = {"id": d.id, "title": d.title, "text": d.text}
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")


def read_docs(path: Path, expected: int) -> list[Document]:
    if not path.is_file():
        raise InputError(f"{path}: file not found; the index folder is incomplete")
    docs: list[Document] = []
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                obj = json.loads(raw.decode("utf-8"))
                doc_id, text, title = obj["id"], obj["text"], obj.get("title", "")
                if not all(isinstance(v, str) for v in (doc_id, text, title)) or not doc_id:
                    raise TypeError("id, text and title must be strings")
                docs.append(Document(id=doc_id, text=text, title=title))
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
                raise InputError(
                    f"{path}:{lineno}: corrupt document line; rebuild the index"
                ) from None
    if len(docs) != expected:
        raise InputError(
            f"{path}: holds {len(docs)} documents but config.json says {expected}; the file is "
            "truncated or corrupt, rebuild the index"
        )
    repeated = duplicates(d.id for d in docs)
    if repeated:  # the builder refuses them; a file that holds them was made elsewhere
        raise InputError(f"{path}: duplicate document ids {preview(repeated)}; an index holds "
                         "each id once, rebuild it")
    return docs
