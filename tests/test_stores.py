"""One behaviour for every store: the folder index and the LanceDB table run the same suite.

Each test takes ``store`` (``dir`` or ``lancedb``) and goes through the same operations: build,
add, delete, search and reopen, with the same errors word for word.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from vecdoctor.data import Document, sample_corpus
from vecdoctor.errors import InputError
from vecdoctor.pipeline import Pipeline

STORES = ("dir", "lancedb")
QUERIES = ["how do I catch an exception", "what does the with statement do",
           "defining a class with methods"]


@pytest.fixture(scope="module")
def docs() -> list[Document]:
    return sample_corpus("python-docs")[:30]


def build(store: str, docs: list[Document], where: Path) -> Any:
    pipeline = Pipeline(model="minilm")
    if store == "dir":
        from vecdoctor.index.store import Index

        return Index.from_pipeline(docs, pipeline, baseline=False)
    pytest.importorskip("lancedb")
    from vecdoctor.index.lance import LanceIndex

    return LanceIndex.from_pipeline(docs, str(where / "db"), pipeline)


def reopen(store: str, index: Any, where: Path) -> Any:
    if store == "dir":
        from vecdoctor.index.store import Index

        return Index.load(index.save(where / "index"))
    from vecdoctor.index.lance import LanceIndex

    return LanceIndex.load(str(where / "db"), baseline=False)


def top_ids(index: Any, mode: str, k: int = 5) -> list[list[str]]:
    from vecdoctor.search.searcher import Searcher

    return [[h.id for h in hits]
            for hits in Searcher(index, cache_size=0).search_batch(QUERIES, k=k, mode=mode)]


@pytest.mark.parametrize("store", STORES)
def test_every_store_offers_the_store_interface(store, docs, tmp_path):
    from vecdoctor.index.base import DocumentIndex, Store

    index = build(store, docs[:4], tmp_path)
    assert isinstance(index, Store) and isinstance(index, DocumentIndex)
    assert index.row(docs[2].id) >= 0 and "nope" not in index


@pytest.mark.parametrize("store", STORES)
def test_a_new_store_refuses_an_empty_corpus_and_repeated_ids_alike(store, docs, tmp_path):
    with pytest.raises(InputError, match="the corpus is empty"):
        build(store, [], tmp_path)
    twice = [*docs[:3], Document(docs[0].id, "again", "the same id a second time")]
    with pytest.raises(InputError, match=f"duplicate document ids: '{docs[0].id}'; ids must be unique"):
        build(store, twice, tmp_path)


@pytest.mark.parametrize("store", STORES)
def test_add_refuses_known_and_repeated_ids_and_adds_nothing_then(store, docs, tmp_path):
    index = build(store, docs[:20], tmp_path)
    with pytest.raises(InputError, match=f"documents already in the index: '{docs[3].id}'"):
        index.add([docs[25], docs[3]])
    with pytest.raises(InputError, match="duplicate document ids: 'x'"):
        index.add([Document("x", "", "one text"), Document("x", "", "another text")])
    assert len(index) == 20 and docs[25].id not in index
    index.add(docs[20:])
    assert len(index) == 30 and docs[25].id in index
    # the added document is found by its own words, lexically and densely
    words = " ".join(docs[25].text.split()[:30])
    from vecdoctor.search.searcher import Searcher

    searcher = Searcher(index, cache_size=0)
    for mode in ("bm25", "dense"):
        assert docs[25].id in [h.id for h in searcher.search(words, k=3, mode=mode)]


@pytest.mark.parametrize("store", STORES)
def test_delete_refuses_unknown_ids_a_string_and_everything_and_deletes_nothing_then(
        store, docs, tmp_path):
    index = build(store, docs[:6], tmp_path)
    with pytest.raises(InputError, match="unknown document ids: 'nope'; nothing was deleted"):
        index.delete([docs[0].id, "nope"])
    with pytest.raises(TypeError, match="not one string"):
        index.delete(docs[0].id)
    with pytest.raises(InputError, match="would leave an empty index"):
        index.delete([d.id for d in docs[:6]])
    assert len(index) == 6 and docs[0].id in index
    index.delete([docs[0].id, docs[0].id, docs[1].id])  # an id named twice is deleted once
    index.delete([])
    assert len(index) == 4 and docs[0].id not in index and docs[2].id in index
    assert all(docs[0].id not in ids for ids in top_ids(index, "hybrid", k=4))


@pytest.mark.parametrize("store", STORES)
def test_a_reopened_store_gives_the_same_hits_and_pipeline(store, docs, tmp_path):
    index = build(store, docs, tmp_path)
    before = {mode: top_ids(index, mode) for mode in ("bm25", "dense", "hybrid")}
    again = reopen(store, index, tmp_path)
    assert len(again) == len(docs)
    assert again.pipeline.model == "minilm" and again.pipeline.chunks is None
    assert again.fingerprint == index.fingerprint
    assert {mode: top_ids(again, mode) for mode in before} == before


def test_both_stores_rank_dense_search_alike(docs, tmp_path):
    """Exact float32 search over the same vectors: the same documents in the same order."""
    folder = build("dir", docs, tmp_path / "dir")
    table = build("lancedb", docs, tmp_path / "lance")
    assert folder.fingerprint == table.fingerprint
    assert top_ids(folder, "dense") == top_ids(table, "dense")
