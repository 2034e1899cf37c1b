"""Reading and validating corpora, queries and qrels (BEIR format and plain text).

This is the only module that parses input files. Every error names the file and the line.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, cast

from vecdoctor.errors import InputError

logger = logging.getLogger(__name__)

Qrels = dict[str, dict[str, int]]


@dataclass(frozen=True)
class Document:
    """One corpus entry. ``content`` (title and text) is what gets encoded and indexed."""

    id: str
    text: str
    title: str = ""

    @property
    def content(self) -> str:
        return f"{self.title}. {self.text}" if self.title else self.text


@dataclass(frozen=True)
class SampleDesign:
    """How a sample of a larger corpus was drawn (``sample_dataset``), so that a number measured
    on the sample can be carried over to the whole corpus.

    ``fixed`` documents are in the sample by construction (the judged documents of the sampled
    queries and their best BM25, and dense, matches in the whole corpus); the other ``random``
    documents were drawn uniformly from the ``pool`` of every other document.
    """

    full_documents: int
    fixed: frozenset[str]
    random: int
    pool: int
    neighbours: int = 0  # how many hard neighbours are among ``fixed``
    neighbours_from: str = ""  # the retrievers that found them: "bm25" or "bm25+dense"

    @property
    def weight(self) -> float:
        """How many pool documents one sampled random document stands for."""
        return self.pool / self.random if self.random else 0.0


@dataclass
class Dataset:
    """A corpus with optional queries and relevance judgements for one split."""

    corpus: list[Document]
    queries: dict[str, str] = field(default_factory=dict)
    qrels: Qrels = field(default_factory=dict)
    name: str = "corpus"
    split: str | None = None
    self_supervised: bool = False
    keep_self_hits: bool = False
    """Whether a retrieved document whose id is the query's own id counts. It does not by
    default, as in BEIR and MTEB: in collections where queries are themselves documents
    (duplicate questions, arguments), a query finding itself is not an answer."""
    sample: SampleDesign | None = None
    """Set when this dataset is a sample of a larger one (``--quick``)."""

    @property
    def has_labels(self) -> bool:
        return bool(self.queries) and bool(self.qrels)


def open_binary(path: Path) -> IO[bytes]:
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a file")
    if path.suffix == ".gz":
        return cast(IO[bytes], gzip.open(path, "rb"))
    return open(path, "rb")  # noqa: SIM115


def _lines(path: Path | str, stream: IO[bytes] | None = None) -> Iterator[tuple[int, str]]:
    """Yield (line number, line without its newline), with a clear error on bad UTF-8 or a
    truncated file. ``stream``: the file already opened (and decompressed), read instead of
    opening ``path``, which then only names it in errors (object storage)."""
    with open_binary(Path(path)) if stream is None else stream as fh:
        lineno = 0
        try:
            for lineno, raw in enumerate(fh, start=1):  # noqa: B007
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise InputError(
                        f"{path}:{lineno}: not valid UTF-8 ({exc.reason} at byte {exc.start}); "
                        "re-encode the file as UTF-8"
                    ) from None
                if lineno == 1 and line.startswith("\ufeff"):
                    line = line[1:]
                yield lineno, line.rstrip("\r\n")
        except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
            raise InputError(
                f"{path}: cannot be read after line {lineno} ({exc}); is the file truncated or "
                "not really compressed?"
            ) from None


def _jsonl(path: Path | str, stream: IO[bytes] | None = None) -> Iterator[tuple[int, dict[str, object]]]:
    for lineno, line in _lines(path, stream):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{lineno}: bad JSON ({exc.msg}, column {exc.colno})") from None
        except (ValueError, RecursionError) as exc:  # a 5000-digit number, nesting too deep
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).split(";")[0]
            raise InputError(f"{path}:{lineno}: bad JSON ({reason})") from None
        if not isinstance(obj, dict):
            raise InputError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        yield lineno, obj


def _field(obj: dict[str, object], key: str, path: Path | str, lineno: int, required: bool = True) -> str:
    value = obj.get(key)
    if value is None:
        if required:
            raise InputError(f"{path}:{lineno}: missing field {key!r}")
        return ""
    if isinstance(value, (int, float)) and key in ("_id", "id"):
        return str(value)
    if not isinstance(value, str):
        raise InputError(f"{path}:{lineno}: field {key!r} must be a string, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(
            f"{path}:{lineno}: field {key!r} holds a lone surrogate ({value[exc.start]!r} at "
            f"character {exc.start}), which is not text; fix the JSON escape"
        ) from None
    return value


def corpus_rows(path: Path | str, stream: IO[bytes] | None = None) -> Iterator[tuple[int, str, str, str]]:
    """(line number, id, title, text) of every object in a corpus JSONL, each checked: ``_id``
    (or ``id``) and ``text`` present, every field a string (a numeric id is taken as its
    text). ``stream``: the file already opened and decompressed (see :func:`_lines`).
    Duplicate ids are the caller's to judge."""
    for lineno, obj in _jsonl(path, stream):
        key = "id" if "_id" not in obj and "id" in obj else "_id"
        doc_id = _field(obj, key, path, lineno)
        yield lineno, doc_id, _field(obj, "title", path, lineno, required=False), _field(
            obj, "text", path, lineno
        )


def read_corpus_jsonl(path: str | Path, on_duplicate: str = "error") -> list[Document]:
    """Read a BEIR ``corpus.jsonl[.gz]`` (``_id`` or ``id``, ``text``, optional ``title``).

    Duplicate ids raise by default; ``on_duplicate="first"`` keeps the first and logs a warning.
    """
    path = Path(path)
    docs: list[Document] = []
    seen: dict[str, int] = {}
    duplicates = 0
    for lineno, doc_id, title, text in corpus_rows(path):
        if doc_id in seen:
            if on_duplicate == "error":
                raise InputError(
                    f"{path}:{lineno}: duplicate _id {doc_id!r} (first seen on line {seen[doc_id]}); "
                    "ids must be unique"
                )
            duplicates += 1
            continue
        seen[doc_id] = lineno
        docs.append(Document(id=doc_id, text=text, title=title))
    if duplicates:
        logger.warning("%s: skipped %d documents with duplicate ids (kept the first)", path, duplicates)
    if not docs:
        raise InputError(f"{path}: the corpus is empty")
    return docs


def read_lines_corpus(path: str | Path) -> list[Document]:
    """One text a line (empty lines skipped); ids are the 1-based line numbers."""
    path = Path(path)
    docs = [Document(id=str(n), text=line) for n, line in _lines(path) if line.strip()]
    if not docs:
        raise InputError(f"{path}: the corpus is empty (no non-blank lines)")
    return docs


def read_text_folder(path: str | Path) -> list[Document]:
    """Every ``.txt``/``.md`` file below ``path`` is one document; its id is the relative path,
    its title the first heading, else its first line that reads as one (:func:`text_title`),
    else the file's name."""
    root = Path(path)
    inside = root.resolve()
    files: list[Path] = []
    outside: list[Path] = []
    for p in sorted(root.rglob("*")):
        if p.suffix in {".txt", ".md"} and p.is_file():
            # a link may point anywhere (`notes.txt -> /etc/passwd`): only what lies in the
            # folder given is read
            (files if inside in p.resolve().parents else outside).append(p)
    if outside:
        shown = ", ".join(str(p.relative_to(root)) for p in outside[:5])
        logger.warning("%s: skipped %d file(s) whose link leads outside the folder (%s%s)",
                       root, len(outside), shown, ", ..." if len(outside) > 5 else "")
    docs = []
    for f in files:
        text = "\n".join(line for _, line in _lines(f)).strip()
        if text:
            title, body = text_title(text, f.stem)
            docs.append(Document(id=str(f.relative_to(root)), title=title, text=body))
    if not docs:
        raise InputError(f"{root}: no non-empty .txt or .md files found")
    return docs


_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$")


def text_title(text: str, fallback: str) -> tuple[str, str]:
    """(title, the text without its title line) of a plain-text or Markdown document: the first
    Markdown heading; else the first of its first 5 lines that reads as a title (3 to 20 words,
    at most 120 characters, not a page header whose first and last words repeat, as man pages'
    ``LS(1)  User Commands  LS(1)``); else ``fallback`` (the file name) and the whole text."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = _HEADING.match(line)
        if m:
            return m.group(1).strip(), "\n".join(lines[:i] + lines[i + 1 :]).strip() or text
    shown = [(i, line.strip()) for i, line in enumerate(lines) if line.strip()][:5]
    for i, line in shown:
        words = line.split()
        if 3 <= len(words) <= 20 and len(line) <= 120 and words[0] != words[-1] and \
                sum(c.isalpha() for c in line) >= len(line) / 2:
            rest = "\n".join(lines[:i] + lines[i + 1 :]).strip()
            return line, rest or text
    return fallback, text


def read_queries(path: str | Path) -> dict[str, str]:
    """Read a BEIR ``queries.jsonl[.gz]`` into ``{query id: text}``."""
    path = Path(path)
    queries: dict[str, str] = {}
    for lineno, obj in _jsonl(path):
        qid = _field(obj, "_id", path, lineno)
        if qid in queries:
            raise InputError(f"{path}:{lineno}: duplicate query _id {qid!r}")
        queries[qid] = _field(obj, "text", path, lineno)
    return queries


def read_qrels(path: str | Path) -> Qrels:
    """Read a BEIR qrels TSV (header ``query-id corpus-id score``; CRLF or LF)."""
    path = Path(path)
    qrels: Qrels = {}
    for lineno, line in _lines(path):
        if not line.strip():
            continue
        parts = line.split("\t")
        if lineno == 1 and not parts[-1].strip().lstrip("-").isdigit():
            continue  # header
        if len(parts) == 4:  # TREC style: qid 0 docid score
            parts = [parts[0], parts[2], parts[3]]
        if len(parts) != 3:
            raise InputError(
                f"{path}:{lineno}: expected 3 tab-separated columns (query-id, corpus-id, score), "
                f"got {len(parts)}"
            )
        qid, did, score = (p.strip() for p in parts)
        try:
            qrels.setdefault(qid, {})[did] = int(score)
        except ValueError:
            raise InputError(f"{path}:{lineno}: score {score!r} is not an integer") from None
    return qrels


def _find(folder: Path, stem: str) -> Path | None:
    for name in (f"{stem}.jsonl", f"{stem}.jsonl.gz"):
        if (folder / name).exists():
            return folder / name
    return None


def load_corpus(path: str | Path, on_duplicate: str = "error") -> list[Document]:
    """Load a corpus from a BEIR folder, a corpus JSONL, a one-text-a-line file or a text folder."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        corpus = _find(path, "corpus")
        if corpus is not None:
            return read_corpus_jsonl(corpus, on_duplicate=on_duplicate)
        if any(path.glob("*.jsonl*")) and not any(path.rglob("*.txt")) and not any(path.rglob("*.md")):
            raise InputError(f"{path}: no corpus.jsonl or corpus.jsonl.gz in this folder")
        return read_text_folder(path)
    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz")):
        return read_corpus_jsonl(path, on_duplicate=on_duplicate)
    return read_lines_corpus(path)


def load_dataset(path: str | Path, split: str = "test", on_duplicate: str = "error") -> Dataset:
    """Load a BEIR folder (corpus, and queries + ``qrels/<split>.tsv`` when present) or a corpus.

    Qrels that point to unknown queries or documents are counted, logged and dropped (BEIR drops
    unknown documents the same way: they can never be retrieved).
    """
    path = Path(path)
    corpus = load_corpus(path, on_duplicate=on_duplicate)
    name = path.name if path.is_dir() else path.stem.split(".")[0]
    if not path.is_dir():
        return Dataset(corpus=corpus, name=name)
    if _find(path, "queries") is None and not (path / "qrels").is_dir():
        return Dataset(corpus=corpus, name=name)
    return load_split(path, split, corpus)


def has_split(path: str | Path, split: str) -> bool:
    """Whether ``path`` is a BEIR folder with queries and ``qrels/<split>.tsv``."""
    path = Path(path)
    return path.is_dir() and _find(path, "queries") is not None and (path / "qrels" / f"{split}.tsv").is_file()


def load_split(path: str | Path, split: str, corpus: list[Document]) -> Dataset:
    """The queries and judgements of one split of the BEIR folder ``path``, over ``corpus`` (its
    documents, already read): another split of a loaded dataset costs no second corpus read."""
    path = Path(path)
    name = path.name
    qfile = _find(path, "queries")
    qrels_file = path / "qrels" / f"{split}.tsv"
    has_qrels_dir = (path / "qrels").is_dir()
    if qfile is None:
        raise InputError(f"{path}: has qrels/ but no queries.jsonl; add the queries or remove qrels/")
    if not qrels_file.exists():
        available = sorted(p.stem for p in (path / "qrels").glob("*.tsv")) if has_qrels_dir else []
        hint = f" (available splits: {', '.join(available)})" if available else ""
        raise InputError(f"{qrels_file}: not found; queries need qrels for split {split!r}{hint}")
    queries = read_queries(qfile)
    raw = read_qrels(qrels_file)
    doc_ids = {d.id for d in corpus}
    qrels: Qrels = {}
    unknown_q = unknown_d = 0
    for qid, rels in raw.items():
        if qid not in queries:
            unknown_q += 1
            continue
        kept = {d: s for d, s in rels.items() if d in doc_ids}
        unknown_d += len(rels) - len(kept)
        if kept:
            qrels[qid] = kept
    if unknown_q or unknown_d:
        logger.warning(
            "%s: ignored qrels for %d unknown queries and %d unknown documents",
            qrels_file, unknown_q, unknown_d,
        )
    if not qrels:
        raise InputError(f"{qrels_file}: no usable judgements (empty split, or ids match nothing)")
    return Dataset(
        corpus=corpus,
        queries={q: queries[q] for q in qrels},
        qrels=qrels,
        name=name,
        split=split,
    )


_SPLIT_SECTIONS = re.compile(r"\n\s*\n")


def sample_corpus(name: str = "python-docs", passage_chars: int = 1200) -> list[Document]:
    """A real corpus available on every machine: the Python language reference topics.

    The topics ship with CPython (``pydoc_data.topics``) and are read at run time; each topic
    is split into passages of about ``passage_chars`` characters at paragraph boundaries.
    """
    if name != "python-docs":
        raise InputError(f"unknown sample {name!r}; available: python-docs")
    from pydoc_data.topics import topics

    docs: list[Document] = []
    for topic in sorted(topics):
        paragraphs = [p.strip() for p in _SPLIT_SECTIONS.split(topics[topic]) if p.strip()]
        chunks: list[list[str]] = [[]]
        size = 0
        for para in paragraphs:
            if size and size + len(para) > passage_chars:
                chunks.append([])
                size = 0
            chunks[-1].append(para)
            size += len(para)
        docs.extend(
            Document(id=f"{topic}#{part}", title=topic, text="\n\n".join(chunk))
            for part, chunk in enumerate(c for c in chunks if c)
        )
    return docs


def write_corpus_jsonl(docs: Iterable[Document], path: str | Path) -> None:
    """Write documents as BEIR corpus JSONL (atomically)."""
    from vecdoctor.io import atomic_write_text

    lines = (
        json.dumps({"_id": d.id, "title": d.title, "text": d.text}, ensure_ascii=False) for d in docs
    )
    atomic_write_text(Path(path), "\n".join(lines) + "\n")


def write_qrels(qrels: Qrels, path: str | Path) -> None:
    from vecdoctor.io import atomic_write_text

    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="\t", lineterminator="\n")
    writer.writerow(["query-id", "corpus-id", "score"])
    for qid, rels in qrels.items():
        for did, score in rels.items():
            writer.writerow([qid, did, score])
    atomic_write_text(Path(path), buf.getvalue())


_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])|(?<=\s[.!?])\s+")
_LOWER_SENTENCE = re.compile(r"(?<=[a-z0-9)\]]{4}[.!?])\s+(?=[a-z])")


def split_sentences(text: str) -> list[str]:
    """``text`` cut after ``.``, ``!`` or ``?`` followed by a capital, a digit or a quote, and
    after a mark standing alone (``word . next``, as tokenised collections write it). A text
    with no capital letter at all is also cut after a mark that ends a word of 4 or more
    characters and is followed by a lower-case word (short words are often abbreviations)."""
    from vecdoctor.config import MAX_TEXT_CHARS

    text = text[:MAX_TEXT_CHARS]
    parts = [s.strip() for s in _SENTENCE.split(text) if s.strip()]
    if text.lower() != text:  # a capital letter somewhere: the rule above applies
        return parts
    return [s.strip() for p in parts for s in _LOWER_SENTENCE.split(p) if s.strip()]
