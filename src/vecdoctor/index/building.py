"""Helpers shared by the index builders: the documents of a new index, probe queries,
blank documents and a corpus given where an index is expected."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vecdoctor.data import Document
from vecdoctor.errors import InputError
from vecdoctor.index.base import DocumentIndex
from vecdoctor.index.chunks import ChunkStore
from vecdoctor.index.docs import as_documents, duplicates, preview
from vecdoctor.pipeline import Pipeline

logger = logging.getLogger(__name__)


def index_documents(corpus: Iterable[Document]) -> list[Document]:
    """The documents of a new index: at least one, ids unique."""
    docs = new_documents(corpus)
    if not docs:
        raise InputError("the corpus is empty; an index needs at least one document")
    return docs


def new_documents(docs: Iterable[Document], taken: Callable[[list[str]], Iterable[str]] | None = None
                  ) -> list[Document]:
    """``docs`` checked for any store: Documents with non-empty string ids, none repeated, and
    (``taken``: the ids of a list that the store already holds) none already in the index."""
    out = as_documents(docs)
    dup = duplicates([d.id for d in out])
    if dup:
        raise InputError(f"duplicate document ids: {preview(dup)}; ids must be unique")
    held = sorted(taken([d.id for d in out])) if taken is not None and out else []
    if held:
        raise InputError(f"documents already in the index: {preview(held)}; "
                         "delete them first or use new ids")
    return out


def ids_to_delete(ids: Iterable[str], held: Callable[[list[str]], Iterable[str]], size: int
                  ) -> list[str]:
    """The distinct ``ids`` a store may delete (``held``: those of a list it holds; ``size``:
    its document count): every id must be in the index, and one document must stay."""
    if isinstance(ids, str):
        raise TypeError("ids must be a list of ids, not one string; wrap it: [doc_id]")
    gone = sorted(set(ids))
    unknown = sorted(set(gone) - set(held(gone)))
    if unknown:
        raise InputError(f"unknown document ids: {preview(unknown)}; nothing was deleted")
    if gone and len(gone) >= size:
        raise InputError("deleting every document would leave an empty index; build a new one")
    return gone


def probe_queries(docs: Sequence[Document], n: int = 50, seed: int = 0) -> list[str]:
    """Self-supervised probe queries: a sentence (not the first, when there is another) of
    each of ``n`` documents sampled with ``seed``; a document of one sentence gives its first
    twenty words."""
    from vecdoctor.data import split_sentences

    rng = np.random.default_rng(seed)
    picks = rng.choice(len(docs), size=min(n, len(docs)), replace=False)
    out = []
    for i in sorted(int(p) for p in picks):
        sentences = [s for s in split_sentences(docs[i].text) if len(s.split()) >= 4]
        text = sentences[min(1, len(sentences) - 1)] if sentences else " ".join(docs[i].content.split()[:20])
        if text.strip():
            out.append(text)
    return out


def not_a_corpus(path: Path) -> None:
    """Refuse a corpus given where an index is expected, saying how to index it."""
    corpus = path.is_file() and path.name.lower().endswith((".jsonl", ".jsonl.gz", ".txt", ".md"))
    if path.is_dir() and not (path / "config.json").exists():
        corpus = any((path / n).exists() for n in ("corpus.jsonl", "corpus.jsonl.gz")) or any(
            p.suffix in {".txt", ".md"} for p in path.iterdir() if p.is_file())
    if corpus:
        raise InputError(f"{path} is a corpus, not an index: build one with `vecdoctor index "
                         f"{path} -o INDEX`, then search INDEX")


def no_vector_for_blank(texts: Sequence[str], vecs: np.ndarray,
                        owners: np.ndarray | None = None) -> np.ndarray:
    """``vecs`` with the rows of blank texts set to zero: a blank document has nothing to
    match, but the model encodes its special tokens into a vector close to every short query's
    (it ranked first for unrelated queries at cosine 0.24). A zero vector scores 0, and BM25
    finds no word in it: it stays in the index under its id and never wins a query."""
    blank = np.array([not t.strip() for t in texts], dtype=bool)
    if not blank.any():
        return vecs
    rows = blank[np.asarray(owners)] if owners is not None else blank
    vecs = np.array(vecs, dtype=np.float32, copy=True)
    vecs[rows] = 0.0
    logger.warning("%d blank document(s) indexed without a dense vector (they match nothing)",
                   int(blank.sum()))
    return vecs


def v1_pipeline(meta: dict[str, Any]) -> dict[str, Any]:
    """The pipeline part of a vecdoctor 0.1.0 index config (format 1)."""
    keys = ("encoder", "transform", "precision", "ann", "oversample", "search")
    return {k: meta[k] for k in keys if meta.get(k) is not None}


def pipeline_of(index: DocumentIndex, chosen: Pipeline | None = None) -> Pipeline:
    """The index's pipeline: its encoder, transform and stored vectors, with the search
    settings, reranker and evidence of ``chosen`` (a default pipeline when ``None``)."""
    import dataclasses

    from vecdoctor.fix.transform import kind_of

    enc = index.encoder_config
    try:
        transform = kind_of(index.transform) if index.transform is not None else None
    except TypeError:  # a transform object of the caller's own
        transform = None
    base = chosen if chosen is not None else Pipeline(model=str(enc.get("model") or "?"))
    source = getattr(index.transform, "source_", None)
    return dataclasses.replace(
        base,
        model=str(enc.get("model") or base.model),
        backend=enc.get("backend"),
        model_precision=enc.get("precision"),
        pooling=enc.get("pooling"),
        max_length=enc.get("max_length"),
        window=enc.get("window"),
        chunks=index.vectors.mode if isinstance(index.vectors, ChunkStore) else None,
        transform=transform,
        # a loaded transform's source_ is its config.json; the pipeline names the folder
        transform_dir=Path(source).parent if transform is not None and source else None,
        storage=index.vectors.precision,
        ann=index.vectors.ann_config,
        oversample=index.oversample,
    )


def pipeline_encoder(pipeline: Pipeline, docs: list[Document],
                     encoder_options: dict[str, Any] | None = None) -> Any:
    """The encoder a pipeline names, for both stores' ``from_pipeline``: ``encoder_options``
    (``cache``, ``batch_size``...) change no vector; an int8 model is calibrated on ``docs``,
    the corpus being indexed, unless calibration texts are given."""
    from vecdoctor.config import ModelPrecision
    from vecdoctor.encode.encoder import Encoder

    options = {k: v for k, v in (encoder_options or {}).items() if v is not None}
    if pipeline.model_precision is ModelPrecision.INT8 and "calibration_texts" not in options:
        options["calibration_texts"] = [d.content for d in docs]
    return Encoder.from_config(pipeline.encoder_config(), **options)
