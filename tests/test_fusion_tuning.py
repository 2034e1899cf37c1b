"""Fusion tuned on half of the queries and confirmed on the other half: a clear gain passes the
gate and reaches the pipeline and the searcher; noise and too few queries leave RRF k=60."""

from __future__ import annotations

import numpy as np
import pytest

from vecdoctor.checkup.fusion import MIN_QUERIES, tune_fusion


def _runs(n_queries: int, dense_noise: float, seed: int = 0):
    """A lexical run that ranks each query's relevant document near the top and a dense run
    whose rank for it is noisy: BM25 deserves the larger weight."""
    rng = np.random.default_rng(seed)
    bm25, dense, qrels = {}, {}, {}
    for q in range(n_queries):
        qid, rel = f"q{q}", f"d{q}-rel"
        docs = [f"d{q}-{j}" for j in range(60)]
        lex = docs[:]
        lex.insert(int(rng.integers(0, 3)), rel)
        sem = docs[:]
        sem.insert(int(rng.integers(0, dense_noise)), rel)
        bm25[qid] = {d: 100.0 - i for i, d in enumerate(lex)}
        dense[qid] = {d: 1.0 - i / 100 for i, d in enumerate(sem)}
        qrels[qid] = {rel: 1}
    return bm25, dense, qrels


def test_a_clear_gain_passes_the_gate_and_noise_does_not():
    bm25, dense, qrels = _runs(200, dense_noise=50)
    tuned = tune_fusion(bm25, dense, qrels)
    assert tuned.kept and tuned.chosen["fusion"] == "weighted" and tuned.chosen["param"] <= 0.3
    assert tuned.settings["fusion"] == "weighted" and tuned.settings["fusion_weights"][0] >= 0.7
    assert tuned.chosen_confirm > tuned.default_confirm + 0.005 and tuned.p_value < 0.05
    assert len(tuned.curve) == 18 and "passes the gate" in tuned.reason
    same = tune_fusion(bm25, bm25, qrels)  # two identical runs: every setting ranks alike
    assert not same.kept and "stays" in same.reason


def test_too_few_queries_keep_the_default_and_say_so():
    bm25, dense, qrels = _runs(MIN_QUERIES - 1, dense_noise=50)
    tuned = tune_fusion(bm25, dense, qrels)
    assert not tuned.kept and tuned.curve == [] and "not enough queries" in tuned.reason


def test_tuned_weights_travel_from_the_pipeline_to_the_searcher(tmp_path):
    import retrieval_support as rs

    from vecdoctor.errors import InputError
    from vecdoctor.index.store import Index
    from vecdoctor.pipeline import Pipeline
    from vecdoctor.search.searcher import Searcher

    pipeline = Pipeline(fusion="weighted", fusion_weights=(0.8, 0.2), max_length=64)
    again = Pipeline.from_dict(pipeline.to_dict())
    assert again.fusion_weights == (0.8, 0.2) and again == pipeline
    docs = rs.subset()[0][:30]
    Index.from_pipeline(docs, pipeline, baseline=False).save(tmp_path / "idx")
    searcher = Searcher(Index.load(tmp_path / "idx"))
    assert searcher.weights == (0.8, 0.2) and str(searcher.fusion) == "weighted"
    for bad in ((1.0,), (0.0, 0.0), (-1.0, 1.0), (float("nan"), 1.0), "0.5,0.5"):
        with pytest.raises(InputError, match="fusion_weights"):
            Pipeline(fusion_weights=bad)


def test_the_rerank_budget_picks_the_cheapest_depth_near_the_best():
    import retrieval_support as rs

    from vecdoctor.checkup.rerank_budget import DEPTHS, rerank_budget
    from vecdoctor.index.store import Index
    from vecdoctor.rerank.rerankers import MaxSimReranker
    from vecdoctor.search.searcher import Searcher

    docs, queries, qrels = rs.subset()
    searcher = Searcher(Index.build(docs, rs.encoder(), baseline=False), cache_size=0)
    run = {q: {h.id: h.score for h in searcher.search(text, k=100)} for q, text in queries.items()}
    budget = rerank_budget(MaxSimReranker(rs.encoder()), run, queries, qrels,
                           {d.id: d for d in docs})
    assert [c["depth"] for c in budget.curve] == list(DEPTHS)
    best = max(c["ndcg@10"] for c in budget.curve)
    chosen = next(c for c in budget.curve if c["depth"] == budget.depth)
    assert chosen["ndcg@10"] >= best - 0.005
    assert all(c["ndcg@10"] < best - 0.005 for c in budget.curve if c["depth"] < budget.depth)
    assert all(c["ms_per_query"] > 0 for c in budget.curve)
    assert budget.settings == {"rerank_depth": budget.depth} and "cheapest" in budget.reason


def test_the_rerank_depth_travels_from_the_pipeline_to_the_searcher(tmp_path):
    import retrieval_support as rs

    from vecdoctor.errors import InputError
    from vecdoctor.index.store import Index
    from vecdoctor.pipeline import Pipeline
    from vecdoctor.search.searcher import Searcher

    pipeline = Pipeline(rerank="maxsim", rerank_depth=20, max_length=64)
    assert Pipeline.from_dict(pipeline.to_dict()).rerank_depth == 20
    Index.from_pipeline(rs.subset()[0][:30], pipeline, baseline=False).save(tmp_path / "idx")
    assert Searcher(Index.load(tmp_path / "idx")).rerank_depth == 20
    for bad in (0, -5, 2.5, True):
        with pytest.raises(InputError, match="rerank_depth"):
            Pipeline(rerank_depth=bad)
