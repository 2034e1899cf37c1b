"""Searcher: modes, stages, bad input, model mismatch, quantized rescoring, concurrency."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import retrieval_support as rs

from vecdoctor.errors import IncompatibleError, InputError
from vecdoctor.search.searcher import Hit, Searcher


@pytest.fixture(scope="module")
def searcher():
    return Searcher(rs.float_index())


def run_ids(searcher, mode, k=10, **kw):
    _, queries, _ = rs.subset()
    results = searcher.search_batch(list(queries.values()), k=k, mode=mode, **kw)
    return {qid: [h.id for h in hits] for qid, hits in zip(queries, results, strict=True)}


@pytest.mark.parametrize("mode", ["bm25", "dense", "hybrid"])
def test_every_mode_retrieves_relevant_documents(searcher, mode):
    _, _, qrels = rs.subset()
    # 120 documents: a random ranking would give recall@10 of about 0.08
    assert rs.recall_at(run_ids(searcher, mode), qrels, 10) >= 0.6


def test_hits_carry_documents_and_stage_ranks(searcher):
    docs = {d.id: d for d in rs.subset()[0]}
    query = next(iter(rs.subset()[1].values()))
    hits = searcher.search(query, k=5, mode="hybrid")
    assert len(hits) == 5 and all(isinstance(h, Hit) for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    for rank, hit in enumerate(hits, start=1):
        assert hit.title == docs[hit.id].title and hit.text == docs[hit.id].text
        assert hit.ranks_by_stage["fused"] == rank
        assert set(hit.ranks_by_stage) <= {"bm25", "dense", "fused"}
        assert "bm25" in hit.ranks_by_stage or "dense" in hit.ranks_by_stage
    dense_hits = searcher.search(query, k=3, mode="dense")
    assert [h.ranks_by_stage for h in dense_hits] == [{"dense": 1}, {"dense": 2}, {"dense": 3}]


def test_hybrid_rrf_scores_follow_from_the_stage_ranks(searcher):
    query = next(iter(rs.subset()[1].values()))
    for hit in searcher.search(query, k=10):
        want = sum(1 / (60 + r) for s, r in hit.ranks_by_stage.items() if s != "fused")
        assert hit.score == pytest.approx(want)


def test_weighted_fusion_mode():
    weighted = Searcher(rs.float_index(), fusion="weighted", weights=(0.3, 0.7))
    hits = weighted.search(next(iter(rs.subset()[1].values())), k=5)
    assert all(0.0 <= h.score <= 1.0 for h in hits)
    assert hits[0].score >= hits[-1].score


def test_k_larger_than_the_corpus_is_clamped(searcher):
    n = len(rs.float_index())
    hits = searcher.search("protein", k=10_000, mode="dense")
    assert len(hits) == n
    assert len({h.id for h in hits}) == n


@pytest.mark.parametrize(
    "k,error",
    [(0, InputError), (-3, InputError), (2.5, TypeError), (True, TypeError), ("10", TypeError)],
)
def test_bad_k(searcher, k, error):
    with pytest.raises(error, match="k must"):
        searcher.search("protein", k=k)


def test_empty_huge_and_non_string_queries(searcher):
    for empty in ("", "   \n\t"):
        with pytest.raises(InputError, match="query is empty"):
            searcher.search(empty)
    with pytest.raises(InputError, match="100000 characters, more than the limit of 10000"):
        searcher.search("a" * 100_000)
    with pytest.raises(TypeError, match="query must be a string"):
        searcher.search(["protein"])
    with pytest.raises(TypeError, match="list of strings"):
        searcher.search_batch("protein")


def test_long_queries_pass_when_the_limit_is_raised():
    roomy = Searcher(rs.float_index(), max_query_chars=200_000)
    hits = roomy.search("cancer " * 14_000, k=3)  # 98k characters
    assert len(hits) == 3


def test_unknown_mode_lists_the_valid_ones(searcher):
    with pytest.raises(InputError, match="bm25, dense, hybrid"):
        searcher.search("protein", mode="semantic")


def test_index_built_with_another_model_is_refused(tmp_path_factory):
    from vecdoctor.encode.encoder import Encoder

    other = Encoder(str(rs.other_model_dir(str(tmp_path_factory.mktemp("models")))))
    with pytest.raises(IncompatibleError, match="built with model 'minilm'"):
        Searcher(rs.index_with("float32"), encoder=other)


def test_encoder_with_other_settings_is_refused():
    from vecdoctor.encode.encoder import Encoder

    with pytest.raises(IncompatibleError, match="pooling"):
        Searcher(
            rs.index_with("float32"),
            encoder=Encoder("minilm", pooling="cls", max_length=rs.MAX_LENGTH),
        )


def test_query_vector_from_another_model_is_refused(searcher):
    with pytest.raises(IncompatibleError, match="384-d vectors from model 'minilm'"):
        searcher.search("protein", mode="dense", query_vector=np.ones(768, np.float32))


def test_query_vector_is_used_as_given(searcher):
    index = rs.float_index()
    hits = searcher.search(
        "ignored words", k=1, mode="dense", query_vector=np.asarray(index.vectors.vectors[7])
    )
    assert hits[0].id == index.docs[7].id


def test_batch_equals_single_searches(searcher):
    queries = list(rs.subset()[1].values())[:4]
    batch = searcher.search_batch(queries, k=5)
    assert batch == [searcher.search(q, k=5) for q in queries]


@pytest.mark.parametrize("precision,minimum", [("int8", 0.95), ("binary", 0.8)])
def test_rescoring_recovers_float_results(searcher, precision, minimum):
    vectors = rs.query_vectors()
    float_runs = run_ids(searcher, "dense", query_vectors=vectors)
    rescored = run_ids(Searcher(rs.index_with(precision)), "dense", query_vectors=vectors)
    raw = run_ids(Searcher(rs.index_with(precision), rescore=False), "dense", query_vectors=vectors)

    def overlap(runs):
        return np.mean([len(set(runs[q]) & set(float_runs[q])) / 10 for q in float_runs])

    assert overlap(rescored) >= minimum
    assert overlap(rescored) >= overlap(raw)


def test_query_cache_counts_hits():
    searcher = Searcher(rs.index_with("float32"))
    searcher.index.embedder._encoder = None  # let the searcher attach its cached encoder
    searcher.search("cache me", mode="dense")
    searcher.search("cache me", mode="dense")
    stats = searcher.cache_stats()
    assert stats["hits"] >= 1 and stats["misses"] >= 1


def test_concurrent_searches_match_sequential_ones(searcher):
    queries = list(rs.subset()[1].values())[:8]
    expected = [searcher.search(q, k=5) for q in queries]
    results: dict[int, list] = {}
    errors: list[BaseException] = []

    def work(i):
        try:
            results[i] = searcher.search(queries[i % len(queries)], k=5)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, hits in results.items():
        assert hits == expected[i % len(queries)]


def test_a_snippet_is_the_passage_that_best_matches_the_query():
    from vecdoctor.search.snippets import mark, snippet

    filler = "Unrelated words about weather and trains fill this part of the page. " * 40
    text = filler + "To extract a tar archive use tar with the x flag and the file name. " + filler
    found = snippet(text, "how to extract an archive with tar", width=200)
    assert "extract a tar archive" in found and len(found) <= 202
    assert found.startswith("…") and found.endswith("…")
    shown = mark(found, "extracting archives")
    assert "**extract**" in shown and "**archive**" in shown  # stemmed: extracting -> extract
    assert snippet("short text", "anything") == "short text"
    # no query word anywhere: the opening of the text
    assert snippet(filler, "zebra", width=80).startswith("Unrelated words")
