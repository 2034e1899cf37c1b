"""Each diagnostic check on constructed inputs with known answers, then `diagnose` end to end."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from vecdoctor.data import Dataset
from vecdoctor.diagnose import Verdict, diagnose
from vecdoctor.diagnose._common import Threshold
from vecdoctor.diagnose.isotropy import (
    check_isotropy,
    cosine_moments,
    effective_rank,
    isotropy_score,
    mean_pairwise_cosine,
    pca_spectrum,
)
from vecdoctor.diagnose.length import check_length, recall_by_length_quartile
from vecdoctor.diagnose.position import bucket_shares, check_position
from vecdoctor.diagnose.quantization import check_quantization
from vecdoctor.diagnose.truncation import check_truncation
from vecdoctor.diagnose.vocabulary import check_vocabulary
from vecdoctor.errors import InputError


def cone(n: int, d: int, spread: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    axis = rng.normal(size=d)
    return axis / np.linalg.norm(axis) + spread * rng.normal(size=(n, d)) / np.sqrt(d)


# -- isotropy ---------------------------------------------------------------------------------
def test_isotropy_near_one_for_gaussian_and_low_for_a_cone():
    gaussian = np.random.default_rng(0).normal(size=(3000, 64))
    assert isotropy_score(gaussian) > 0.95
    assert isotropy_score(cone(3000, 64, spread=0.3)) < 0.3


def test_cosine_moments_equal_brute_force():
    x = np.random.default_rng(1).normal(size=(40, 12)) + 0.5
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = (u @ u.T)[~np.eye(40, dtype=bool)]
    mean, var = cosine_moments(x)
    assert mean == pytest.approx(sims.mean(), abs=1e-6)
    assert var == pytest.approx(sims.var(), abs=1e-6)
    assert mean_pairwise_cosine(x) == pytest.approx(sims.mean(), abs=1e-6)


def test_spectrum_and_effective_rank():
    gaussian = np.random.default_rng(2).normal(size=(5000, 20))
    shares = pca_spectrum(gaussian)
    assert shares.sum() == pytest.approx(1.0) and np.all(np.diff(shares) <= 1e-12)
    assert effective_rank(shares) > 18
    assert effective_rank(np.array([1.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert effective_rank(np.full(4, 0.25)) == pytest.approx(4.0)


def test_isotropy_check_warns_above_threshold_and_reports_layers():
    narrow = check_isotropy(cone(500, 32, spread=0.5))
    assert narrow.stats.mean_cosine > 0.6 and narrow.verdict in (Verdict.WARN, Verdict.FAIL)
    assert narrow.threshold.warn == 0.6
    layers = np.stack([cone(50, 8, s, seed=3) for s in (0.2, 1.0, 5.0)])
    spread = check_isotropy(np.random.default_rng(0).normal(size=(500, 32)), layer_vectors=layers)
    assert spread.verdict is Verdict.OK
    assert len(spread.layer_mean_cosine) == 3
    assert spread.layer_mean_cosine[0] > spread.layer_mean_cosine[1] > spread.layer_mean_cosine[2]
    with pytest.raises(InputError, match="identical"):
        check_isotropy(np.ones((10, 4)))


def test_threshold_grading_both_directions():
    t = Threshold("x", warn=0.5, fail=0.8)
    assert [t.grade(v) for v in (0.1, 0.6, 0.9)] == [Verdict.OK, Verdict.WARN, Verdict.FAIL]
    low = Threshold("recall", warn=0.95, fail=0.9, higher_is_worse=False)
    assert [low.grade(v) for v in (0.99, 0.93, 0.5)] == [Verdict.OK, Verdict.WARN, Verdict.FAIL]
    assert "< 0.95 warns" in low.describe()


# -- length and truncation --------------------------------------------------------------------
def test_length_check_finds_norms_shrinking_with_length():
    rng = np.random.default_rng(0)
    lengths = rng.integers(10, 500, size=200)
    raw = rng.normal(size=(200, 16)) / np.sqrt(lengths)[:, None] * 4
    res = check_length(lengths, raw)
    assert res.spearman_norm < -0.8
    assert abs(res.spearman_centroid) < 0.3 and res.verdict is Verdict.OK
    biased = rng.normal(size=(200, 16)) * 0.2 + np.log(lengths)[:, None] * np.ones(16)
    assert check_length(lengths, biased).verdict is not Verdict.OK


def test_recall_by_length_quartile_hand_computed():
    docs = np.eye(4, dtype=np.float32)
    queries = np.array([[1, 0, 0, 0], [0, 0.9, 0.1, 0]], dtype=np.float32)
    lengths = np.array([10, 20, 30, 40])
    # k=1: query 0 finds doc 0 (relevant); query 1 finds doc 1 but doc 3 is relevant
    res = recall_by_length_quartile(queries, docs, lengths, [(0,), (1, 3)], k=1)
    assert res.pairs == (1, 1, 0, 1)
    assert res.recall[0] == 1.0 and res.recall[1] == 1.0 and res.recall[3] == 0.0
    assert np.isnan(res.recall[2])


def test_truncation_hand_computed():
    res = check_truncation(np.array([100, 300, 600]), 256)
    assert res.share_truncated == pytest.approx(2 / 3)
    assert res.share_tokens_dropped == pytest.approx((44 + 344) / 1000)
    assert res.verdict is Verdict.FAIL and "window" in res.recommendation
    assert check_truncation(np.array([100, 300, 600]), 256, windowed=True).verdict is Verdict.OK
    assert check_truncation(np.array([10, 20]), 256).verdict is Verdict.OK


# -- vocabulary -------------------------------------------------------------------------------
def test_fragmentation_finds_a_planted_compound(minilm, real_texts):
    planted = "Zyntrexolabrin"
    texts = [f"{t} The {planted} assay was repeated." for t in real_texts[:60]]
    res = check_vocabulary(texts, minilm.tokenizer)
    assert res.terms[0].word == planted
    assert res.terms[0].count == 60
    pieces = minilm.tokenizer.encode(planted, add_special_tokens=False).tokens
    assert res.terms[0].pieces == tuple(pieces) and len(pieces) >= 3
    assert all(t.word.lower() not in {"the", "was"} for t in res.terms)


def test_fertility_is_sub_tokens_per_word(minilm):
    texts = ["cat dog", "phosphorylation cat"]
    res = check_vocabulary(texts, minilm.tokenizer)
    n = {
        w: len(minilm.tokenizer.encode(w, add_special_tokens=False).tokens)
        for w in ("cat", "dog", "phosphorylation")
    }
    assert res.n_words == 4
    assert res.fertility == pytest.approx((2 * n["cat"] + n["dog"] + n["phosphorylation"]) / 4)
    with pytest.raises(InputError, match="no words"):
        check_vocabulary(["123 456", ""], minilm.tokenizer)


# -- position ---------------------------------------------------------------------------------
def test_position_buckets_sum_to_one_and_match_uniform_attention():
    rng = np.random.default_rng(0)
    attentions = [rng.dirichlet(np.ones(n)) for n in (5, 40, 120, 300)]
    att, pos = bucket_shares(attentions)
    assert att.sum() == pytest.approx(1.0) and pos.sum() == pytest.approx(1.0)
    uniform = [np.full(200, 1 / 200)]
    res = check_position(uniform, pooling="cls")
    assert res.attention_share == pytest.approx(res.position_share)
    assert res.first_bucket_ratio == pytest.approx(1.0) and res.verdict is Verdict.OK
    assert res.position_share == pytest.approx((11 / 200, 40 / 200, 50 / 200, 99 / 200))


def test_position_bias_matters_only_for_first_token_pooling():
    head_heavy = [np.r_[np.full(11, 0.8 / 11), np.full(189, 0.2 / 189)]]
    assert check_position(head_heavy, pooling="cls").verdict is Verdict.FAIL
    assert check_position(head_heavy, pooling="mean").verdict is Verdict.OK


# -- quantization -----------------------------------------------------------------------------
def test_quantization_check_on_real_vectors(minilm, real_texts):
    vectors = minilm.encode_documents(real_texts[:50])
    res = check_quantization(vectors, n_queries=20)
    names = [r.name for r in res.rows]
    assert names == ["float32", "int8", "int8-global-p95", "binary", "pq"]
    assert res.row("int8").recall_overlap > 0.9 and res.row("int8").mean_cosine > 0.99
    assert res.row("binary").compression == 32.0 and res.row("int8").compression == 4.0
    assert res.row("binary").rescored_overlap >= res.row("binary").recall_overlap
    assert 0 < res.row("pq").mean_cosine < 1 and res.queries_from_corpus
    assert res.verdict in (Verdict.OK, Verdict.WARN)


# -- diagnose end to end ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_dataset(beir_dir):
    """40 SciFact test queries, their relevant documents and 40 more documents."""
    from vecdoctor.data import load_dataset

    full = load_dataset(beir_dir)
    qids = sorted(full.qrels)[:12]
    relevant = {d for q in qids for d in full.qrels[q]}
    corpus = [d for d in full.corpus if d.id in relevant]
    corpus += [d for d in full.corpus if d.id not in relevant][:40]
    return Dataset(
        corpus=corpus,
        queries={q: full.queries[q] for q in qids},
        qrels={q: full.qrels[q] for q in qids},
        name="scifact-tiny",
        split="test",
    )


@pytest.fixture(scope="module")
def report(tiny_dataset, minilm):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # 40 texts < 384 dims: expected warning
        return diagnose(
            tiny_dataset, minilm, sample=40, seed=0, layer_sample=12, attention_sample=12
        )


def test_diagnose_runs_every_check_with_verdicts(report):
    names = [name for name, _ in report.checks()]
    assert names == ["isotropy", "length", "truncation", "vocabulary", "position", "quantization"]
    for row in report.summary():
        assert row["verdict"] in ("ok", "warn", "fail") and row["rule"] and row["recommendation"]
    assert report.meta["n_sample"] == 40 and report.meta["n_queries"] == 12
    assert len(report.isotropy.layer_mean_cosine) == 7  # embeddings + 6 layers of MiniLM-L6
    assert sum(report.position.attention_share) == pytest.approx(1.0, abs=1e-5)
    assert report.length.quartiles is not None and sum(report.length.quartiles.pairs) >= 12
    json.dumps(report.to_dict(), allow_nan=False)


def test_diagnose_reports_before_and_after_each_fix(report):
    assert [f.name for f in report.fixes] == ["whitening", "abtt"]
    for fix in report.fixes:
        assert fix.before == report.isotropy.stats
        assert fix.after.isotropy != fix.before.isotropy
        assert 0 <= fix.recall_before <= 1 and 0 <= fix.recall_after <= 1
        assert fix.improves == (fix.recall_after > fix.recall_before + 0.005)


def test_diagnose_is_deterministic_for_a_seed(minilm, real_texts):
    texts = real_texts[:20]
    kwargs = dict(sample=8, fixes=(), layer_sample=4, attention_sample=4)
    a = diagnose(texts, minilm, seed=3, **kwargs).to_dict()
    b = diagnose(texts, minilm, seed=3, **kwargs).to_dict()
    for d in (a, b):
        d["meta"].pop("timings_s")
    assert a == b
    assert a["length"]["quartiles"] is None and a["fixes"] == []


def test_diagnose_rejects_bad_corpora(minilm):
    with pytest.raises(InputError, match="at least 2"):
        diagnose(["only one text"], minilm)
    with pytest.raises(InputError, match="identical"):
        diagnose(["same text"] * 5, minilm)
    with pytest.raises(InputError, match="sample"):
        diagnose(["a b", "c d"], minilm, sample=1)
    with pytest.raises(TypeError, match="Dataset"):
        diagnose(42, minilm)


def test_pooled_only_model_is_diagnosed_without_token_checks(beir_dir):
    """e5-small-q4 returns pooled vectors only: the vector checks run, token checks say why not."""
    from vecdoctor.data import load_dataset
    from vecdoctor.encode.encoder import Encoder
    from vecdoctor.evaluate.metrics import sample_dataset
    from vecdoctor.report.diagnosis import render_diagnosis

    small = sample_dataset(load_dataset(beir_dir), max_queries=6, max_docs=40, seed=0)
    rep = diagnose(small, Encoder("e5-small-q4"), sample=40, seed=0)
    assert [name for name, _ in rep.checks()] == ["isotropy", "length", "truncation", "quantization"]
    assert set(rep.meta["skipped"]) == {"hidden layers", "position", "vocabulary"}
    no_windows = check_truncation(np.array([600, 700, 100]), 512, windows_possible=False)
    assert "split documents" in no_windows.recommendation and "--window" not in no_windows.recommendation
    html = render_diagnosis(rep)
    assert "Vocabulary fragmentation" in html and "exposes no tokenizer" in html


def test_fit_on_corpus_samples_encodes_and_fits(minilm):
    from vecdoctor.data import sample_corpus
    from vecdoctor.diagnose.fixes import fit_on_corpus
    from vecdoctor.fix.transform import AllButTheTop

    texts = [d.content for d in sample_corpus()[:30]]
    fit = fit_on_corpus(texts, minilm, "abtt", n_components=2, sample=20, seed=1)
    assert isinstance(fit.transform, AllButTheTop) and fit.transform.n_samples_ == 20
    assert fit.transform.fingerprint_ == minilm.fingerprint
    assert fit.after.mean_cosine < fit.before.mean_cosine  # the common directions are gone
    with pytest.raises(InputError, match="at least 2"):
        fit_on_corpus(texts[:1], minilm, "abtt")
