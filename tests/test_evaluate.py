"""Metrics against hand-computed values, significance tests, run files, self-supervised queries."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vecdoctor.data import Document
from vecdoctor.errors import InputError
from vecdoctor.evaluate.metrics import (
    estimate_full_ndcg,
    evaluate_run,
    paired_t_test,
    parse_metric,
    randomization_test,
    read_trec_run,
    sample_dataset,
    self_supervised,
    split_sentences,
    write_trec_run,
)

QRELS = {"q1": {"a": 1, "c": 1}, "q2": {"x": 1}}


def test_metrics_match_hand_computed_values():
    run = {"q1": {"a": 3.0, "b": 2.0, "c": 1.0}, "q2": {"y": 2.0, "x": 1.0}}
    ev = evaluate_run(QRELS, run, ("ndcg@10", "recall@1", "mrr@10", "map@100"))
    dcg_q1 = 1 + 1 / math.log2(4)
    idcg_q1 = 1 + 1 / math.log2(3)
    ndcg_q2 = (1 / math.log2(3)) / 1
    assert ev.per_query["ndcg@10"]["q1"] == pytest.approx(dcg_q1 / idcg_q1)
    assert ev.per_query["ndcg@10"]["q2"] == pytest.approx(ndcg_q2)
    assert ev.metrics["recall@1"] == pytest.approx((0.5 + 0.0) / 2)
    assert ev.metrics["mrr@10"] == pytest.approx((1 + 0.5) / 2)
    assert ev.per_query["map@100"]["q1"] == pytest.approx((1 + 2 / 3) / 2)


def test_mrr_is_cut_at_k():
    run = {"q2": {f"d{i}": 100.0 - i for i in range(12)} | {"x": 1.0}}
    ev = evaluate_run({"q2": {"x": 1}}, run, ("mrr@10", "mrr@20"))
    assert ev.metrics["mrr@10"] == 0.0
    assert ev.metrics["mrr@20"] == pytest.approx(1 / 13)


def test_queries_missing_from_the_run_count_as_zero():
    ev = evaluate_run(QRELS, {"q1": {"a": 1.0, "c": 0.5}}, ("ndcg@10",))
    assert ev.per_query["ndcg@10"]["q2"] == 0.0
    assert ev.metrics["ndcg@10"] == pytest.approx(0.5)
    assert ev.num_queries == 2


@pytest.mark.parametrize("bad", ["ndcg", "ndcg@0", "foo@10", "ndcg@x"])
def test_bad_metric_names(bad):
    with pytest.raises(InputError, match="ndcg@K"):
        parse_metric(bad)


def test_significance_tests():
    a = {f"q{i}": 0.8 + 0.01 * (i % 3) for i in range(60)}
    b = {f"q{i}": 0.5 + 0.01 * (i % 5) for i in range(60)}
    assert randomization_test(a, b) < 0.001
    assert paired_t_test(a, b) < 0.001
    assert randomization_test(a, dict(a)) == 1.0
    noise = {f"q{i}": a[f"q{i}"] + (0.01 if i % 2 else -0.01) for i in range(60)}
    assert randomization_test(a, noise) > 0.5
    assert randomization_test(a, b, seed=1) == pytest.approx(randomization_test(a, b, seed=1))


def test_trec_run_round_trip(tmp_path):
    run = {"q1": {"a": 3.0, "b": 2.5}, "q2": {"x": 1.0}}
    write_trec_run(run, tmp_path / "r.trec", tag="t")
    lines = (tmp_path / "r.trec").read_text().splitlines()
    assert lines[0] == "q1 Q0 a 1 3.000000 t"
    assert read_trec_run(tmp_path / "r.trec") == run


def test_self_supervised_queries_are_removed_from_their_document(real_corpus):
    ds = self_supervised(real_corpus[:300], n_queries=40, seed=3)
    assert ds.self_supervised and 30 <= len(ds.queries) <= 40
    by_id = {d.id: d for d in ds.corpus}
    original = {d.id: d for d in real_corpus[:300]}
    for qid, query in ds.queries.items():
        (doc_id,) = ds.qrels[qid]
        assert query in original[doc_id].text
        assert query not in by_id[doc_id].text
    again = self_supervised(real_corpus[:300], n_queries=40, seed=3)
    assert again.queries == ds.queries


def test_self_supervised_needs_sentences():
    with pytest.raises(InputError, match="sentences"):
        self_supervised([Document(id="1", text="one sentence only")])


def test_split_sentences():
    assert split_sentences("First one. Second one! Third? yes") == ["First one.", "Second one!", "Third? yes"]


def test_sample_dataset_keeps_relevant_documents(beir_dir):
    from vecdoctor.data import load_dataset

    ds = sample_dataset(load_dataset(beir_dir), max_queries=20, max_docs=100, seed=1)
    ids = {d.id for d in ds.corpus}
    assert len(ds.qrels) == 20 and len(ds.corpus) == 100
    assert all(d in ids for rels in ds.qrels.values() for d in rels)


def test_a_hard_sample_keeps_each_querys_best_bm25_matches(beir_dir):
    from vecdoctor.data import load_dataset
    from vecdoctor.index.bm25 import BM25Index

    full = load_dataset(beir_dir)
    ds = sample_dataset(full, max_queries=20, max_docs=100, seed=1, hard_share=0.5)
    easy = sample_dataset(full, max_queries=20, max_docs=100, seed=1)
    assert set(ds.qrels) == set(easy.qrels) and len(ds.corpus) == 100
    judged = {d for rels in ds.qrels.values() for d in rels}
    design = ds.sample
    room = 100 - len(judged)
    assert design.neighbours == room // 2 and design.random == room - room // 2
    assert design.fixed >= judged and len(design.fixed) == len(judged) + design.neighbours
    assert design.pool == len(full.corpus) - len(design.fixed) and design.full_documents == len(full.corpus)
    # matches are taken rank by rank (rank 1 of every query, then rank 2, ...): with room for
    # one per query, every sampled query's best BM25 match in the whole corpus is in the sample
    # (a judged one, of any sampled query, was in it already)
    assert design.neighbours >= len(ds.qrels)
    bm25 = BM25Index().build([d.content for d in full.corpus])
    ids = {d.id for d in ds.corpus}
    for q in ds.qrels:
        rows, _ = bm25.search(ds.queries[q], 1)
        assert full.corpus[int(rows[0])].id in ids
    with pytest.raises(InputError, match="hard_share"):
        sample_dataset(full, 20, 100, hard_share=1.5)


def test_the_full_corpus_estimate_weights_random_documents():
    from vecdoctor.data import SampleDesign

    qrels = {"q1": {"a": 1}, "q2": {"b": 2}}
    # q1: a fixed distractor, then one random document (standing for 3 of the pool), then "a"
    # at an estimated rank 1 + 1 + 3 = 5; q2: its document first
    design = SampleDesign(full_documents=100, fixed=frozenset({"a", "b", "f"}), random=20, pool=60)
    run = {"q1": {"f": 3.0, "r": 2.0, "a": 1.0}, "q2": {"b": 5.0, "r": 1.0}}
    got = estimate_full_ndcg(run, qrels, design)
    assert got == pytest.approx((1 / math.log2(6) + 1.0) / 2)
    # the same run read as a run over the whole corpus (random documents weigh 1) is plain nDCG
    plain = SampleDesign(full_documents=3, fixed=frozenset(), random=3, pool=3)
    assert estimate_full_ndcg(run, qrels, plain) == pytest.approx(evaluate_run(qrels, run).metrics["ndcg@10"])
    # pushed below rank 10 by random documents: no gain
    deep = SampleDesign(full_documents=1000, fixed=frozenset({"a", "b"}), random=1, pool=900)
    assert estimate_full_ndcg({"q1": {"r": 2.0, "a": 1.0}}, {"q1": {"a": 1}}, deep) == 0.0


def test_models_on_a_sample_are_compared_on_the_whole_corpus_estimate(beir_dir):
    """On a quick sample a model's nDCG@10 (and the per-query values its gate tests) is the
    whole corpus' estimate of its dense run; the sample's own number is kept beside it."""
    from vecdoctor.data import load_dataset
    from vecdoctor.evaluate.compare import compare_models
    from vecdoctor.evaluate.metrics import estimate_full_ndcg_per_query
    from vecdoctor.evaluate.variants import evaluate_variants

    ds = sample_dataset(load_dataset(beir_dir), max_queries=20, max_docs=60, seed=1, hard_share=0.5)
    row = compare_models(ds, ["minilm-l3-onnx"]).rows[0]
    dense = evaluate_variants(ds, "minilm-l3-onnx", ["dense"]).results[0]  # the same retrieval path
    estimate = estimate_full_ndcg_per_query(dense.run, ds.qrels, ds.sample)
    assert row.per_query == pytest.approx(estimate, abs=1e-9)
    assert row.ndcg_at_10 == pytest.approx(np.mean(list(estimate.values())))
    assert row.ndcg_on_sample == pytest.approx(dense.ndcg)
    assert row.ndcg_at_10 <= row.ndcg_on_sample  # the rest of the corpus only adds distractors


def _questions_that_are_documents():
    """The built-in sample as a duplicate-questions collection: the first passage of a topic is
    a query (with its own id) and the topic's second passage its answer."""
    from collections import defaultdict

    from vecdoctor.data import Dataset, sample_corpus

    docs = sample_corpus()
    by_topic = defaultdict(list)
    for d in docs:
        by_topic[d.title].append(d)
    pairs = [(p[0], p[1]) for p in by_topic.values() if len(p) >= 2][:20]
    queries = {q.id: q.text[:300] for q, _ in pairs}
    qrels = {q.id: {a.id: 1} for q, a in pairs}
    keep = {d.id for pair in pairs for d in pair}
    corpus = [d for d in docs if d.id in keep] + [d for d in docs if d.id not in keep][:60]
    return Dataset(corpus=corpus, queries=queries, qrels=qrels, name="self-hits")


def test_a_query_never_counts_its_own_document():
    from vecdoctor.evaluate.variants import evaluate_variants

    ds = _questions_that_are_documents()
    options = {"max_length": 128}
    skipped = evaluate_variants(ds, "minilm", ["dense"], encoder_options=options).get("dense")
    ds.keep_self_hits = True
    kept = evaluate_variants(ds, "minilm", ["dense"], encoder_options=options).get("dense")
    assert skipped.self_hits == len(ds.queries) and kept.self_hits == 0
    assert skipped.to_dict()["self_hits_removed"] == len(ds.queries)
    for qid, ranked in skipped.run.items():
        assert qid not in ranked and len(ranked) == min(len(kept.run[qid]), len(ds.corpus) - 1)
    # each query finds itself first when kept: the answer can never be first, nDCG@10 is lower
    assert all(max(r, key=r.get) == q for q, r in kept.run.items())
    assert skipped.ndcg > kept.ndcg + 0.1
