"""Fusion tuned on half of the queries and confirmed on the other half: a clear gain passes the
gate and reaches the pipeline and the searcher; noise and too few queries leave RRF k=60."""

from __future__ import annotations

import numpy as np
import pytest

from vecdoctor.checkup.fusion import MIN_QUERIES, tune_fusion


def _runs(n_queries: int, dense_noise: float, seed: int = 0, prefix: str = "q"):
    """A lexical run that ranks each query's relevant document near the top and a dense run
    whose rank for it is noisy: BM25 deserves the larger weight."""
    rng = np.random.default_rng(seed)
    bm25, dense, qrels = {}, {}, {}
    for q in range(n_queries):
        qid, rel = f"{prefix}{q}", f"d{q}-rel"
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


def test_a_tuning_split_chooses_and_every_evaluation_query_confirms():
    bm25, dense, qrels = _runs(60, dense_noise=50)
    train = _runs(80, dense_noise=50, seed=1, prefix="t")
    tuned = tune_fusion(bm25, dense, qrels, tuning=train, tuning_split="train")
    assert tuned.tuned_on == "train" and (tuned.tuning_queries, tuned.confirm_queries) == (80, 60)
    assert tuned.kept and tuned.chosen["fusion"] == "weighted" and "the 80 train queries" in tuned.reason
    halves = tune_fusion(bm25, dense, qrels)
    # the confirming numbers are every evaluation query's: the default's is their mean
    rrf60 = next(c for c in tuned.curve if (c["fusion"], c["param"]) == ("rrf", 60.0))
    assert tuned.default_confirm == pytest.approx(rrf60["confirm_ndcg"])
    assert halves.confirm_queries == 30 and tuned.default_confirm != halves.default_confirm
    # queries that are also evaluation queries never tune; too few left: halves, and it says so
    overlapping = tuple({**part, **{q: v for q, v in list(ev.items())[:30]}}
                        for part, ev in zip(_runs(10, 50, seed=2, prefix="t"), (bm25, dense, qrels),
                                            strict=True))
    fallback = tune_fusion(bm25, dense, qrels, tuning=overlapping, tuning_split="train")
    assert fallback.tuned_on == "half" and fallback.tuning_queries == 30
    assert fallback.reason.startswith("the train split has 10 usable queries")


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


def test_the_checkup_tunes_fusion_on_the_train_split_of_a_real_folder(tmp_path):
    """On a BEIR folder with train and test qrels (the built-in sample's self-supervised
    queries), fusion is chosen on the train queries for the pipeline's own dense side and
    confirmed on every test query; the default's confirming number is hybrid's as measured."""
    import dataclasses

    import retrieval_support as rs

    from vecdoctor.checkup.stages import Encoding, tune_fusion_step, tuning_split
    from vecdoctor.data import load_dataset
    from vecdoctor.encode.cache import VectorCache
    from vecdoctor.evaluate.variants import evaluate_variants
    from vecdoctor.pipeline import Pipeline

    folder = rs.sample_beir()
    test = load_dataset(folder, "test")
    train = tuning_split(folder, "test", "train", test)
    assert train is not None and train.split == "train" and train.corpus is test.corpus
    assert not set(train.qrels) & set(test.qrels)
    assert tuning_split(folder, "test", "test", test) is None  # never the evaluated split
    assert tuning_split(folder, "test", "dev", test) is None  # a split the folder lacks
    qt, qe = sorted(train.qrels)[:30], sorted(test.qrels)[:30]
    wanted = {d for q in qt for d in train.qrels[q]} | {d for q in qe for d in test.qrels[q]}
    docs = [d for d in test.corpus if d.id in wanted] + \
        [d for d in test.corpus if d.id not in wanted][:60]
    small_test, small_train = (dataclasses.replace(d, corpus=docs, qrels={q: d.qrels[q] for q in ids})
                               for d, ids in ((test, qe), (train, qt)))
    decisions: list = []
    cache = VectorCache(max_size=1000)  # the documents are encoded once for both measurements
    pipeline, tuned = tune_fusion_step(small_test, Pipeline(mode="hybrid"), 0, decisions,
                                       small_train, Encoding("minilm", cache, None))
    assert tuned.tuned_on == "train" and (tuned.tuning_queries, tuned.confirm_queries) == (30, 30)
    assert len(tuned.curve) == 18 and decisions[0].topic == "fusion"
    assert "train queries" in decisions[0].evidence
    assert (pipeline.fusion == "weighted") == (tuned.kept and tuned.chosen["fusion"] == "weighted")
    hybrid = evaluate_variants(small_test, "minilm", ["hybrid"], cache=cache).get("hybrid")
    assert tuned.default_confirm == pytest.approx(hybrid.ndcg, abs=1e-3)
