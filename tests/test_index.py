"""Index folder: build, save/load round trips, corruption, atomic writes, add/delete; the dense
kernels and BM25 against brute force / bm25s on the same tokens."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import retrieval_support as rs

from vecdoctor.data import Document
from vecdoctor.errors import IncompatibleError, InputError
from vecdoctor.index import Index, dense
from vecdoctor.index.bm25 import BM25Index, Tokenizer


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    return rs.saved_index_dir(str(tmp_path_factory.mktemp("index")))


@pytest.fixture
def copy_of(saved, tmp_path):
    def make():
        target = tmp_path / "idx"
        shutil.copytree(saved, target)
        return target

    return make


# -- dense kernels -----------------------------------------------------------------------
def brute(queries, vectors, k):
    scores = queries @ vectors.T
    rows = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return rows, np.take_along_axis(scores, rows, axis=1)


def test_exact_search_matches_brute_force_across_chunks():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((1000, 16)).astype(np.float32)
    queries = rng.standard_normal((5, 16)).astype(np.float32)
    rows, scores = dense.exact_search(queries, vectors, 7, chunk_rows=64)
    want_rows, want_scores = brute(queries, vectors, 7)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5)


def test_top_k_breaks_ties_by_row_and_clamps():
    rows, vals = dense.top_k(np.array([1.0, 3.0, 3.0, 0.5], dtype=np.float32), 10)
    assert rows.tolist() == [1, 2, 0, 3]
    assert vals.tolist() == [3.0, 3.0, 1.0, 0.5]
    assert dense.top_k(np.ones(3, dtype=np.float32), 0)[0].size == 0


def test_hamming_search_matches_brute_force():
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((300, 40)).astype(np.float32)
    queries = rng.standard_normal((3, 40)).astype(np.float32)
    packed = dense.pack_signs(vectors)
    rows, scores = dense.hamming_search(queries, packed, 40, 300, chunk_rows=50)
    signs = np.where(vectors > 0, 1, -1)
    for q, r, s in zip(queries, rows, scores, strict=True):
        want = signs @ np.where(q > 0, 1, -1)
        np.testing.assert_array_equal(s, want[r])
        assert np.all(np.diff(s) <= 0)


def test_faiss_binary_search_equals_the_numpy_kernel():
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((500, 44)).astype(np.float32)  # 44 bits: a padded last byte
    queries = rng.standard_normal((4, 44)).astype(np.float32)
    packed = dense.pack_signs(vectors)
    index = dense.binary_index(packed)
    rows, scores = dense.binary_index_search(index, queries, 44, 500)
    want_rows, want_scores = dense.hamming_search(queries, packed, 44, 500)
    np.testing.assert_array_equal(rows, want_rows)  # every row: ties ordered by row in both
    np.testing.assert_array_equal(scores, want_scores)
    top, top_scores = dense.binary_index_search(index, queries, 44, 7)
    np.testing.assert_array_equal(top_scores, want_scores[:, :7])


def test_int8_search_scores_are_the_decoded_inner_products():
    from vecdoctor.fix.quantize import ScalarQuantizer

    rng = np.random.default_rng(4)
    vectors = rng.standard_normal((9000, 24)).astype(np.float32)  # more rows than one block
    queries = rng.standard_normal((3, 24)).astype(np.float32)
    quantizer = ScalarQuantizer().fit(vectors)
    codes = quantizer.encode(vectors)
    rows, scores = dense.int8_search(queries, codes, quantizer.scale_, quantizer.offset_, 50,
                                     chunk_rows=5000)
    decoded = queries @ quantizer.decode(codes).T
    for q in range(3):
        np.testing.assert_allclose(scores[q], decoded[q, rows[q]], rtol=1e-5, atol=1e-5)
        assert set(rows[q].tolist()) == set(np.argsort(-decoded[q])[:50].tolist())


def test_quantized_search_with_full_rescoring_is_exact():
    from vecdoctor.index.vectors import VectorStore

    rng = np.random.default_rng(2)
    vectors = rng.standard_normal((200, 24)).astype(np.float32)
    queries = rng.standard_normal((4, 24)).astype(np.float32)
    want_rows, _ = brute(queries, vectors, 5)
    for precision in ("int8", "binary"):
        store = VectorStore.build(vectors, precision)
        rows, _ = store.search(queries, 5, rescore=True, oversample=40)  # every row rescored
        np.testing.assert_array_equal(rows, want_rows)


def test_query_dimension_mismatch_is_incompatible():
    with pytest.raises(IncompatibleError, match="384"):
        dense.exact_search(np.ones((1, 768), np.float32), np.ones((3, 384), np.float32), 2)


# -- BM25 ----------------------------------------------------------------------------------
def test_tokenizer_lowercases_drops_stopwords_and_stems():
    assert Tokenizer()("The Running dogs are running!") == ["run", "dog", "run"]


def test_bm25_scores_equal_bm25s_on_the_same_tokens():
    import bm25s

    docs, queries, _ = rs.subset()
    texts = [d.content for d in docs]
    ours = BM25Index().build(texts)
    tok = Tokenizer()
    reference = bm25s.BM25()
    reference.index([tok(t) for t in texts], show_progress=False)
    for query in list(queries.values())[:5]:
        np.testing.assert_allclose(ours.scores(query), reference.get_scores(tok(query)), rtol=1e-6)


def test_bm25_query_without_known_terms_returns_nothing():
    bm25 = BM25Index().build(["alpha beta", "gamma delta"])
    rows, _ = bm25.search("zzzz qqqq the", 5)
    assert rows.size == 0


def test_bm25_save_load_round_trip(tmp_path):
    bm25 = BM25Index().build(["protein folding in yeast", "cancer cells divide", "yeast cells"])
    bm25.save(tmp_path / "bm25")
    loaded = BM25Index.load(tmp_path / "bm25")
    np.testing.assert_array_equal(loaded.scores("yeast cells"), bm25.scores("yeast cells"))


# -- build / save / load -------------------------------------------------------------------
def test_round_trip_is_exact(saved):
    built = rs.float_index()
    loaded = Index.load(saved)
    assert [d.id for d in loaded.docs] == [d.id for d in built.docs]
    assert loaded.docs[3] == built.docs[3]
    np.testing.assert_array_equal(np.asarray(loaded.vectors.vectors), built.vectors.vectors)
    assert isinstance(loaded.vectors.vectors, np.memmap)
    query = next(iter(rs.subset()[1].values()))
    np.testing.assert_array_equal(loaded.bm25.scores(query), built.bm25.scores(query))


def test_config_describes_the_pipeline(saved):
    config = json.loads((saved / "config.json").read_text())
    built = rs.float_index()
    assert config["encoder"]["model"] == "minilm"
    assert config["encoder"]["max_length"] == rs.MAX_LENGTH
    assert config["fingerprint"] == rs.encoder().fingerprint
    assert config["model_fingerprint"] == rs.encoder().model_fingerprint
    assert config["pipeline"]["storage"] == "float32"
    assert config["pipeline"]["model"] == "minilm" and config["pipeline"]["transform_dir"] is None
    assert (config["class"], config["format_version"]) == ("Index", 2)
    assert config["counts"]["documents"] == len(built)
    assert config["dims"] == {"encoder": 384, "index": 384}
    assert config["bm25"]["stemmer"] == "english"
    assert "numpy" in config["versions"] and "bm25s" in config["versions"]


@pytest.mark.parametrize(
    "precision,dtype,width", [("int8", np.int8, 384), ("binary", np.uint8, 48)]
)
def test_quantized_index_round_trip(tmp_path, precision, dtype, width):
    index = rs.index_with(precision)
    index.save(tmp_path / precision)
    codes = np.load(tmp_path / precision / "codes.npy")
    assert codes.dtype == dtype and codes.shape == (len(index), width)
    assert (tmp_path / precision / "quantizer" / "config.json").is_file()
    loaded = Index.load(tmp_path / precision)
    assert loaded.precision == precision
    np.testing.assert_array_equal(np.asarray(loaded.vectors.codes), index.vectors.codes)


def test_empty_and_duplicate_corpora_are_rejected():
    with pytest.raises(InputError, match="empty"):
        Index.build([], rs.encoder())
    doc = Document(id="1", text="x")
    with pytest.raises(InputError, match="duplicate document ids: '1'"):
        Index.build([doc, doc], rs.encoder())


# -- damaged folders -----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["vectors.npy", "docs.jsonl", "bm25/data.npy", "config.json"])
def test_missing_file_is_a_clear_error(copy_of, name):
    folder = copy_of()
    (folder / name).unlink()
    with pytest.raises(InputError, match=name.split("/")[-1]):
        Index.load(folder)


def test_truncated_vectors_are_a_clear_error(copy_of):
    folder = copy_of()
    path = folder / "vectors.npy"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated or corrupt"):
        Index.load(folder)


def test_truncated_docs_file_is_a_clear_error(copy_of):
    folder = copy_of()
    path = folder / "docs.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-3]))
    with pytest.raises(InputError, match=f"holds {len(lines) - 3} documents"):
        Index.load(folder)


def test_vectors_with_wrong_shape_are_rejected(copy_of):
    folder = copy_of()
    np.save(folder / "vectors.npy", np.zeros((5, 384), np.float32))
    with pytest.raises(InputError, match=r"shape \(5, 384\)"):
        Index.load(folder)


def test_failed_save_leaves_the_old_index_intact(copy_of, monkeypatch):
    folder = copy_of()
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    index = Index.load(folder)
    index.delete([index.docs[0].id])

    def boom(self, path):
        raise OSError("disk full")

    monkeypatch.setattr(BM25Index, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        index.save()
    after = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    assert after == before
    assert len(Index.load(folder)) == len(index) + 1
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".")] == []


# -- add / delete --------------------------------------------------------------------------
def test_add_then_search_and_reload(copy_of):
    folder = copy_of()
    index = Index.load(folder)
    index.use_encoder(rs.encoder())
    new = Document(
        id="new-1",
        title="Zebrafish fin regeneration",
        text="Zebrafish regenerate amputated fins through blastema formation.",
    )
    index.add([new])
    assert index.docs[-1] == new and len(index.vectors) == len(index)
    rows, _ = index.bm25.search("zebrafish blastema", 1)
    assert index.docs[rows[0]].id == "new-1"
    index.save()
    reloaded = Index.load(folder)
    assert "new-1" in reloaded and len(reloaded) == len(index)
    np.testing.assert_allclose(
        np.asarray(reloaded.vectors.vectors[-1]), index.embed_documents([new.content])[0], atol=1e-6
    )


def test_add_existing_or_repeated_id_is_an_error():
    index = rs.index_with("float32")
    existing = index.docs[0]
    with pytest.raises(InputError, match=f"already in the index: '{existing.id}'"):
        index.add([Document(id=existing.id, text="other text")])
    twice = Document(id="dup", text="t")
    with pytest.raises(InputError, match="duplicate document ids: 'dup'"):
        index.add([twice, twice])
    assert len(index) == len(rs.float_index())


def test_delete_removes_documents_everywhere():
    index = rs.index_with("int8")
    gone = index.docs[5]
    n = len(index)
    index.delete([gone.id])
    assert gone.id not in index and len(index) == n - 1
    assert len(index.vectors) == n - 1 and index.vectors.codes.shape[0] == n - 1
    assert index.bm25.num_docs == n - 1
    rows, _ = index.bm25.search(gone.title, n)
    assert gone.id not in {index.docs[r].id for r in rows}


def test_delete_unknown_ids_changes_nothing():
    index = rs.index_with("float32")
    n = len(index)
    with pytest.raises(InputError, match="unknown document ids: 'nope'"):
        index.delete([index.docs[0].id, "nope"])
    assert len(index) == n
    with pytest.raises(TypeError, match="wrap it"):
        index.delete("abc")
    with pytest.raises(InputError, match="empty index"):
        index.delete([d.id for d in index.docs])


# -- approximate search --------------------------------------------------------------------
@pytest.mark.parametrize("ann", ["hnsw", {"kind": "ivf", "nprobe": 8}])
def test_ann_finds_the_exact_neighbours_and_round_trips(tmp_path, ann):
    from vecdoctor.index.vectors import VectorStore

    base = rs.float_index()
    vectors = np.asarray(base.vectors.vectors)
    store = VectorStore.build(vectors, "float32", ann=ann)
    queries = vectors[:20]
    exact, _ = dense.exact_search(queries, vectors, 10)
    approx, _ = store.search(queries, 10)
    overlap = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact, strict=True)])
    assert overlap >= 0.8
    assert approx[:, 0].tolist() == list(range(20))  # each vector finds itself first
    index = Index(list(base.docs), base.bm25, store, base.encoder_config)
    index.save(tmp_path / "ann")
    loaded = Index.load(tmp_path / "ann")
    np.testing.assert_array_equal(loaded.vectors.search(queries, 10)[0], approx)


def test_ann_needs_float32():
    from vecdoctor.index.vectors import VectorStore

    with pytest.raises(InputError, match="precision float32"):
        VectorStore.build(np.ones((4, 8), np.float32), "int8", ann="hnsw")
    with pytest.raises(InputError, match="hnsw, ivf"):
        VectorStore.build(np.ones((4, 8), np.float32), "float32", ann="lsh")


# -- ann="auto": exact search while it meets the latency budget ------------------------------
def test_auto_ann_measures_exact_search_and_builds_hnsw_over_budget(real_corpus, tmp_path):
    from vecdoctor.encode.cache import VectorCache
    from vecdoctor.encode.encoder import Encoder
    from vecdoctor.index.ann import choose_ann

    docs = real_corpus[:150]
    minilm = Encoder("minilm", cache=VectorCache(max_size=1000))  # documents encoded once
    fast = Index.build(docs, minilm, ann="auto", ann_budget_ms=1e6, baseline=False)
    assert fast.pipeline.ann is None and fast.ann_choice["chosen"] == "exact"
    assert fast.ann_choice["queries"] == 50 and fast.ann_choice["exact_ms_p50"] > 0
    # a budget no search can meet: HNSW, with its recall against exact search measured
    slow = Index.build(docs, minilm, ann="auto", ann_budget_ms=0.0, baseline=False)
    choice = slow.ann_choice
    assert slow.pipeline.ann.kind == "hnsw" and choice["chosen"] == "hnsw"
    assert choice["recall_at_10"] >= 0.95 and choice["ef_search"] == slow.pipeline.ann.ef_search
    assert "recall@10" in choice["reason"]
    again = Index.load(slow.save(tmp_path / "auto"))
    assert again.ann_choice == choice and again.pipeline.ann == slow.pipeline.ann
    # the recall is what it says: HNSW against brute force on fresh queries
    queries = minilm.encode_queries(["vitamin D deficiency", "gene expression in cancer cells"])
    vectors = np.asarray(slow.vectors.vectors)
    truth, _ = brute(queries, vectors, 10)
    rows, _ = slow.vectors.search(queries, 10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, truth, strict=True)]) >= 0.8
    # vectors encoded elsewhere get the same choice
    given = Index.from_vectors(docs, vectors, minilm, ann="auto", ann_budget_ms=0.0)
    assert given.ann_choice["chosen"] == "hnsw" and given.pipeline.ann.kind == "hnsw"
    # int8 storage keeps exact search over its codes, and says so
    small = Index.build(docs[:50], minilm, ann="auto", precision="int8", baseline=False)
    assert small.ann_choice["chosen"] == "exact" and "int8" in small.ann_choice["reason"]
    # the rule itself: an unreachable recall target keeps the last ef_search step and says so
    config, _, report = choose_ann(vectors, queries, budget_ms=0.0, target=1.01)
    assert config.ef_search == 1024 and "stays below" in report.reason
