"""Reading a log of live queries or a batch of new documents for the drift report."""

from __future__ import annotations

import json
import re
import zlib
from collections import Counter
from pathlib import Path

from vecdoctor.data import Document, open_binary
from vecdoctor.errors import InputError

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def read_text_log(path: str | Path) -> tuple[list[str], dict[str, int], bool]:
    """The texts of a query log or a batch of new documents, tolerant of damaged lines.

    One text a line, or JSONL with ``query``, ``text`` (and ``title``, joined before it) per
    object (a BEIR ``queries.jsonl`` or ``corpus.jsonl`` works). Lines that are empty, not
    UTF-8, bad JSON, binary junk (control characters) or not encodable text (a lone
    surrogate) are counted by reason and skipped, never a crash. Returns the texts, the
    counts of skipped lines and whether the objects looked like documents (a ``title``).
    """
    path = Path(path)
    skipped: Counter[str] = Counter()
    texts: list[str] = []
    documents = False
    with open_binary(path) as fh:
        try:
            for raw in fh:
                text, reason, titled = _log_line(raw)
                documents = documents or titled
                if reason:
                    skipped[reason] += 1
                else:
                    texts.append(text)
        except (OSError, EOFError, zlib.error) as exc:
            raise InputError(f"{path}: cannot be read after {len(texts)} texts ({exc}); is the "
                             "file truncated or not really compressed?") from None
    return texts, dict(skipped), documents


def _log_line(raw: bytes) -> tuple[str, str, bool]:
    """(text, reason it is skipped or "", whether it is a titled document) of one line."""
    try:
        line = raw.decode("utf-8").lstrip("\ufeff").strip()
    except UnicodeDecodeError:
        return "", "not_utf8", False
    if not line:
        return "", "empty", False
    titled = False
    if line.startswith("{"):
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):
            return "", "bad_json", False
        value = obj.get("query", obj.get("text")) if isinstance(obj, dict) else None
        if not isinstance(value, str):
            return "", "no_text_field", False
        title = obj.get("title")
        titled = isinstance(title, str)
        line = Document("", title if titled else "", value).content.strip()
        if not line:
            return "", "empty", False
    if _CONTROL.search(line):
        return "", "binary", False
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        return "", "unencodable", False
    return line, "", titled
