"""One retrieval path: the model comparison, the variants and a saved index report the same
numbers for the same pipeline, because all of them search through the Searcher."""

from __future__ import annotations

import functools

import pytest


@functools.lru_cache(maxsize=1)
def _sample():
    from vecdoctor.data import sample_corpus
    from vecdoctor.evaluate.metrics import sample_dataset, self_supervised

    ds = self_supervised(sample_corpus("python-docs"), n_queries=40, seed=0)
    return sample_dataset(ds, max_queries=40, max_docs=150, seed=0)


def test_compare_models_and_the_dense_variant_agree():
    from vecdoctor.evaluate.compare import compare_models
    from vecdoctor.evaluate.metrics import estimate_full_ndcg
    from vecdoctor.evaluate.variants import evaluate_variants

    ds = _sample()
    comparison = compare_models(ds, ["minilm"])
    row = next(r for r in comparison.rows if r.model == "minilm")
    dense = evaluate_variants(ds, "minilm", ["dense"]).get("dense")
    assert dense is not None and row.ndcg_at_10 is not None
    assert 0.1 < dense.ndcg < 1.0  # a real measurement, not an empty run
    # a sample: the model is compared on the whole corpus' estimate, and its number on the
    # sample is the dense variant's
    assert ds.sample is not None and row.ndcg_on_sample == pytest.approx(dense.ndcg, abs=1e-6)
    assert row.ndcg_at_10 == pytest.approx(estimate_full_ndcg(dense.run, ds.qrels, ds.sample), abs=1e-6)
    assert row.recall_at_10 == pytest.approx(dense.evaluation.metrics["recall@10"], abs=1e-6)


def test_a_saved_index_reproduces_the_variant(tmp_path):
    from vecdoctor.evaluate.saved import evaluate_index
    from vecdoctor.evaluate.variants import evaluate_variants
    from vecdoctor.index.store import Index

    ds = _sample()
    variant = evaluate_variants(ds, "minilm", ["hybrid"]).get("hybrid")
    Index.build(ds.corpus, "minilm").save(tmp_path / "idx")
    saved = evaluate_index(Index.load(tmp_path / "idx"), ds, modes=["hybrid"])
    row = saved.get("hybrid")
    assert variant is not None and row is not None
    assert row.ndcg == pytest.approx(variant.ndcg, abs=1e-6)


@pytest.mark.slow
def test_the_two_commands_print_the_same_ndcg(tmp_path):
    import json

    from retrieval_support import write_beir
    from typer.testing import CliRunner

    from vecdoctor.cli import app

    data = write_beir(_sample(), tmp_path / "beir")
    runner = CliRunner()
    compared = runner.invoke(app, ["-q", "compare-models", str(data), "-m", "minilm"])
    assert compared.exit_code == 0, compared.output
    evaluated = runner.invoke(app, ["-q", "evaluate", str(data), "-m", "minilm", "--variants", "dense"])
    assert evaluated.exit_code == 0, evaluated.output
    row = json.loads(compared.stdout)["models"][0]
    dense = json.loads(evaluated.stdout)["variants"][0]
    assert (row["model"], dense["variant"]) == ("minilm", "dense")
    assert row["ndcg@10"] == dense["ndcg@10"] and row["recall@10"] == dense["recall@10"]
