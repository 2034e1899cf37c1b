"""Chunk-level retrieval: every token window its own vector, documents ranked by their best chunk."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vecdoctor.config import Chunking, Precision
from vecdoctor.data import sample_corpus
from vecdoctor.errors import InputError
from vecdoctor.index.chunks import ChunkStore


def _maxp(queries, vectors, owners, n_docs, mode="max"):
    """Document scores by brute force: every chunk scored, the best per document."""
    scores = queries @ vectors.T
    out = np.full((len(queries), n_docs), -np.inf, dtype=np.float32)
    for q in range(len(queries)):
        np.maximum.at(out[q], owners, scores[q])
    if mode == "max+first":
        first = np.searchsorted(owners, np.arange(n_docs))
        out = (out + scores[:, first]) / 2
    return out


def _chunks(seed=0, n_docs=60, dim=16):
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 6, size=n_docs)
    owners = np.repeat(np.arange(n_docs), counts)
    vectors = rng.standard_normal((len(owners), dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = rng.standard_normal((7, dim)).astype(np.float32)
    return vectors, owners, n_docs, queries


@pytest.mark.parametrize("mode", ["max", "max+first"])
def test_search_ranks_documents_by_their_best_chunk(mode):
    vectors, owners, n_docs, queries = _chunks()
    store = ChunkStore.build(vectors, owners, n_docs, mode)
    want = _maxp(queries, vectors, owners, n_docs, mode)
    for k in (1, 5, 20, n_docs, n_docs + 5):
        rows, scores = store.search(queries, k, oversample=n_docs)
        for q in range(len(queries)):
            kept = rows[q][rows[q] >= 0]
            assert len(kept) == min(k, n_docs) and len(set(kept.tolist())) == len(kept)
            expect = np.sort(want[q])[::-1][: len(kept)]
            np.testing.assert_allclose(scores[q][: len(kept)], expect, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(want[q][kept], scores[q][: len(kept)], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(store.score_rows(queries[0], [3, 0, 9]), want[0][[3, 0, 9]], rtol=1e-5)


def test_quantized_chunks_rescore_to_the_float_scores():
    vectors, owners, n_docs, queries = _chunks(1)
    store = ChunkStore.build(vectors, owners, n_docs, precision=Precision.INT8)
    exact = ChunkStore.build(vectors, owners, n_docs)
    rows, scores = store.search(queries, 10, rescore=True, oversample=8)
    want_rows, want_scores = exact.search(queries, 10)
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, want_rows, strict=True)])
    assert overlap >= 0.9
    found = _maxp(queries, vectors, owners, n_docs)
    for q in range(len(queries)):  # whatever is returned carries its exact float score
        np.testing.assert_allclose(scores[q], found[q][rows[q]], rtol=1e-5, atol=1e-6)


def test_append_select_and_owner_checks():
    vectors, owners, n_docs, queries = _chunks(2)
    head = int(np.searchsorted(owners, 40))
    store = ChunkStore.build(vectors[:head], owners[:head], 40)
    grown = store.append(vectors[head:], owners[head:] - 40, n_docs - 40)
    full = ChunkStore.build(vectors, owners, n_docs)
    np.testing.assert_array_equal(grown.search(queries, 8)[0], full.search(queries, 8)[0])
    keep = np.array([5, 2, 50, 7])
    part = full.select(keep)
    assert len(part) == 4 and part.n_chunks == int(np.isin(owners, keep).sum())
    want = _maxp(queries, vectors, owners, n_docs)[:, keep]
    rows, scores = part.search(queries, 4)
    np.testing.assert_allclose(scores, np.take_along_axis(want, rows, axis=1), rtol=1e-5)
    with pytest.raises(InputError, match="document order"):
        ChunkStore.build(vectors[:4], np.array([0, 1, 0, 1]), 2)
    with pytest.raises(InputError, match="do not cover"):
        ChunkStore.build(vectors[:3], np.array([0, 0, 1]), 3)


@pytest.fixture(scope="module")
def long_docs():
    """Built-in sample passages: at 48 tokens per model input most are several chunks."""
    return sample_corpus()[:40]


@pytest.fixture(scope="module")
def short_encoder(minilm_path):
    from vecdoctor.encode.encoder import Encoder

    return Encoder("minilm", max_length=48)


def test_index_with_chunks_matches_brute_force_and_survives_save_load(long_docs, short_encoder, tmp_path):
    from vecdoctor.index.store import Index
    from vecdoctor.search.searcher import Searcher

    index = Index.build(long_docs, short_encoder, chunks="max", baseline=False)
    assert index.pipeline.chunks is Chunking.MAX
    assert index.vectors.n_chunks > 2 * len(long_docs)
    vectors, owners = short_encoder.encode_chunks([d.content for d in long_docs])
    # windows of the model input, half shared: the first chunk is the truncated text's input
    np.testing.assert_allclose(vectors[index.vectors.first],
                               short_encoder.encode_documents([d.content for d in long_docs]),
                               atol=1e-5)
    queries = ["how do I catch an exception", "what does the with statement do"]
    qv = short_encoder.encode_queries(queries)
    want = _maxp(qv, vectors, owners, len(long_docs))
    hits = Searcher(index, cache_size=0).search_batch(queries, k=5, mode="dense")
    for q, found in enumerate(hits):
        rows = [index.row(h.id) for h in found]
        np.testing.assert_allclose([h.score for h in found], np.sort(want[q])[::-1][:5], atol=1e-5)
        np.testing.assert_allclose(want[q][rows], [h.score for h in found], atol=1e-5)
    folder = index.save(tmp_path / "chunked")
    meta = json.loads((folder / "config.json").read_text())
    assert meta["pipeline"]["chunks"] == "max" and meta["counts"]["chunks"] == index.vectors.n_chunks
    again = Index.load(folder)
    assert again.pipeline.chunks is Chunking.MAX and again.vectors.n_chunks == index.vectors.n_chunks
    hits2 = Searcher(again, cache_size=0).search_batch(queries, k=5, mode="hybrid")
    assert [h.id for h in hits2[0]] == [h.id for h in Searcher(index, cache_size=0).search_batch(
        queries, k=5, mode="hybrid")[0]]
    # documents added and deleted keep their chunks with them
    again.delete([long_docs[0].id])
    again.add([long_docs[0]])
    assert again.vectors.n_chunks == index.vectors.n_chunks
    hits3 = Searcher(again, cache_size=0).search_batch(queries, k=5, mode="dense")
    assert [h.id for h in hits3[0]] == [h.id for h in hits[0]]
    np.testing.assert_allclose([h.score for h in hits3[0]], [h.score for h in hits[0]], atol=1e-5)


def test_chunks_in_a_pipeline_and_their_bad_input(long_docs, short_encoder, tmp_path):
    from vecdoctor.encode.encoder import Encoder
    from vecdoctor.index.store import Index
    from vecdoctor.pipeline import Pipeline

    pipeline = Pipeline(model="minilm", max_length=48, window="24:12:max", chunks="max+first")
    path = pipeline.save(tmp_path / "pipeline.json")
    assert Pipeline.load(path) == pipeline
    # written only when on: a pipeline without chunks stays readable by vecdoctor 0.3.0
    assert "chunks" not in Pipeline().to_dict() and pipeline.to_dict()["chunks"] == "max+first"
    index = Index.from_pipeline(long_docs[:10], path, baseline=False)
    assert index.pipeline.chunks is Chunking.MAX_FIRST and str(index.pipeline.window) == "24:12:max"
    with pytest.raises(InputError, match="unknown chunking 'best'"):
        Pipeline(chunks="best")
    too_long = Encoder("minilm", max_length=48, window="64:32")
    with pytest.raises(InputError, match="longer than model 'minilm' reads .* at most 46"):
        Index.build(long_docs[:3], too_long, chunks="max", baseline=False)


def test_cli_index_and_search_with_chunks(long_docs, tmp_path):
    """`vecdoctor index --chunks`, a search, and a window longer than the model refused before
    anything is written."""
    from typer.testing import CliRunner

    from vecdoctor.cli import app
    from vecdoctor.data import write_corpus_jsonl

    corpus = tmp_path / "corpus.jsonl"
    write_corpus_jsonl(long_docs[:12], corpus)
    runner = CliRunner()
    out = tmp_path / "idx"
    made = runner.invoke(app, ["index", str(corpus), "--max-length", "48", "--chunks", "max+first",
                               "-o", str(out)])
    assert made.exit_code == 0, made.output
    summary = json.loads(made.stdout)
    assert summary["chunking"] == "max+first" and summary["chunks"] > 2 * summary["documents"]
    found = runner.invoke(app, ["search", str(out), "string formatting", "-k", "3", "--mode", "dense"])
    assert found.exit_code == 0, found.output
    hits = json.loads(found.stdout)["hits"]
    assert len(hits) == 3 and len({h["id"] for h in hits}) == 3
    bad = runner.invoke(app, ["index", str(corpus), "--max-length", "48", "--window", "100:50",
                              "--chunks", "max", "-o", str(tmp_path / "bad")])
    assert bad.exit_code != 0 and "at most 46" in bad.output
    assert not (tmp_path / "bad").exists()


def test_lancedb_table_with_chunks_ranks_documents_by_their_best_chunk(long_docs, short_encoder, tmp_path):
    """A LanceDB table with chunks returns the brute-force MaxP documents and scores (exact
    search, both chunk scorings, as the folder index's test above), keeps them through
    reopening and added documents, and says it holds chunks."""
    pytest.importorskip("lancedb")
    from vecdoctor.index.lance import LanceIndex
    from vecdoctor.search.searcher import Searcher

    docs = long_docs[:24]
    queries = ["how do I catch an exception", "what does the with statement do", "sorting a list"]
    lance = LanceIndex.build(docs[:18], str(tmp_path / "db"), short_encoder, chunks="max+first")
    lance.add(docs[18:])  # appended documents get their chunks too
    reopened = LanceIndex.load(str(tmp_path / "db"), baseline=False)
    assert reopened.chunks is Chunking.MAX_FIRST and reopened.pipeline.chunks is Chunking.MAX_FIRST
    assert reopened.config()["chunks"] == "max+first"
    qv = short_encoder.encode_queries(queries)
    vectors, owners = short_encoder.encode_chunks([d.content for d in docs])
    assert len(vectors) > 2 * len(docs)
    for mode in ("max+first", "max"):
        table = LanceIndex(reopened.table, reopened.config()["encoder"], chunks=mode)
        want = _maxp(qv, vectors, owners, len(docs), mode)
        hits = Searcher(table, cache_size=0).search_batch(queries, k=6, mode="dense")
        for q, found in enumerate(hits):
            assert len(found) == 6
            positions = [next(i for i, d in enumerate(docs) if d.id == h.id) for h in found]
            np.testing.assert_allclose([h.score for h in found], np.sort(want[q])[::-1][:6], atol=1e-5)
            np.testing.assert_allclose(want[q][positions], [h.score for h in found], atol=1e-5)
    # the table's dense vector is each document's first chunk, as the folder index's
    _, vecs, _ = reopened.sample_documents(np.arange(len(docs)))
    first = vectors[np.searchsorted(owners, np.arange(len(docs)))]
    np.testing.assert_allclose(np.sort(vecs @ qv[0]), np.sort(first @ qv[0]), atol=1e-5)


def test_lancedb_chunks_from_a_pipeline_and_the_cli(long_docs, tmp_path):
    """`vecdoctor index --store lancedb --chunks` and `lance-index --chunks` write tables with
    chunks; the Ray engine and a window longer than the model are refused before any write."""
    pytest.importorskip("lancedb")
    from typer.testing import CliRunner

    from vecdoctor.cli import app
    from vecdoctor.data import write_corpus_jsonl
    from vecdoctor.index.lance import LanceIndex
    from vecdoctor.pipeline import Pipeline

    pipeline = Pipeline(model="minilm", max_length=48, chunks="max")
    made = LanceIndex.from_pipeline(long_docs[:6], str(tmp_path / "p"), pipeline)
    assert made.pipeline.chunks is Chunking.MAX and len(made) == 6
    corpus = tmp_path / "corpus.jsonl"
    write_corpus_jsonl(long_docs[:8], corpus)
    runner = CliRunner()
    out = runner.invoke(app, ["index", str(corpus), "--max-length", "48", "--chunks", "max+first",
                              "--store", "lancedb", "-o", str(tmp_path / "db")])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["chunking"] == "max+first"
    found = runner.invoke(app, ["search", str(tmp_path / "db"), "string formatting", "-k", "3",
                                "--mode", "dense"])
    assert found.exit_code == 0, found.output
    assert len({h["id"] for h in json.loads(found.stdout)["hits"]}) == 3
    lance = runner.invoke(app, ["lance-index", str(corpus), "--uri", str(tmp_path / "l"),
                                "--max-length", "48", "--chunks", "max"])
    assert lance.exit_code == 0, lance.output
    assert json.loads(lance.stdout)["chunking"] == "max"
    for extra, says in ((["--engine", "ray"], "--chunks needs --engine local"),
                        (["--window", "100:50"], "at most 46")):
        bad = runner.invoke(app, ["lance-index", str(corpus), "--uri", str(tmp_path / "bad"),
                                  "--max-length", "48", "--chunks", "max", *extra])
        assert bad.exit_code != 0 and says in bad.output, bad.output
        assert not (tmp_path / "bad").exists()
