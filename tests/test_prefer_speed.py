"""--prefer speed: the fast CPU backends enter the model comparison and the pipeline."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from vecdoctor.checkup.rules import ModelChoice, decide
from vecdoctor.cli import app
from vecdoctor.data import write_corpus_jsonl
from vecdoctor.evaluate.compare import (
    BACKEND_KEEP,
    ModelRow,
    Prefer,
    compare_models,
    recommend,
)
from vecdoctor.evaluate.metrics import sample_dataset
from vecdoctor.index import Index


def _row(backend="torch", precision="fp32", rate=20.0, ndcg=0.60, converted=None):
    return ModelRow("minilm", 384, backend, precision, converted if converted is not None else backend != "torch",
                    rate, 5.0, ndcg, 0.7, 0.9, 0.1, 1536)


def test_fastest_variant_that_keeps_quality_is_chosen():
    base = _row()
    lossy = _row("onnx", "int8", rate=60.0, ndcg=0.60 * BACKEND_KEEP - 0.001)
    good = _row("openvino", "int8", rate=50.0, ndcg=0.60 * BACKEND_KEEP + 0.0005)
    pick, reason = recommend([base, lossy, good], Prefer.SPEED)
    assert pick is good
    assert "minilm (openvino int8) encodes 50.0 docs/s" in reason and "20.0 docs/s" in reason
    # quality and memory never pick a converted variant
    assert recommend([base, lossy, good], Prefer.QUALITY)[0] is base
    assert recommend([base, good], Prefer.MEMORY)[0] is base
    # nothing keeps quality: the plain model stays
    assert recommend([base, lossy], Prefer.SPEED)[0] is base


def _model(name, per_query, rate):
    import numpy as np

    values = dict(enumerate(per_query))
    return ModelRow(name, 384, "onnx", "fp32", False, rate, 5.0, float(np.mean(per_query)), 0.7,
                    0.9, 0.1, 1536, per_query={str(k): float(v) for k, v in values.items()})


def test_a_model_best_by_noise_is_a_tie_decided_by_its_cost():
    import numpy as np

    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.8, 200)
    noise = rng.normal(0, 0.05, 200)
    noisy = base + noise - noise.mean() + 0.0014  # ahead by 0.0014 on average, as by chance
    slow_best = _model("tiny-gain", noisy, rate=30.0)
    fast = _model("minilm", base, rate=60.0)
    pick, reason = recommend([slow_best, fast], Prefer.QUALITY)
    assert pick is fast
    # the cheaper to run by its size (an unknown folder has no known cost), not the faster timing
    assert reason.startswith("tie:") and "tiny-gain" in reason and "cheapest to run" in reason
    # a real gain (0.05, the same on every query) passes the gate and stays
    better = _model("better", base + 0.05, rate=30.0)
    pick, reason = recommend([better, fast], Prefer.QUALITY)
    assert pick is better and "highest nDCG@10" in reason and not reason.startswith("tie")


def test_chosen_backend_goes_into_the_pipeline():
    settings, decisions = decide({}, "minilm", chosen_model=ModelChoice("minilm", "why", "openvino",
                                                                        "int8"))
    assert (settings["backend"], settings["model_precision"]) == ("openvino", "int8")
    assert decisions[0].choice == "minilm on openvino int8"


@pytest.mark.slow
def test_speed_comparison_measures_fast_backends_and_indexes_with_the_pick(home, beir_dir, tmp_path):
    pytest.importorskip("openvino")
    pytest.importorskip("onnxruntime")
    from vecdoctor.data import load_dataset

    small = sample_dataset(load_dataset(beir_dir), max_queries=10, max_docs=40, seed=0)
    comp = compare_models(small, ["minilm"], prefer="speed")
    measured = {(r.backend, r.precision): r for r in comp.rows}
    assert set(measured) == {("torch", "fp32"), ("openvino", "int8"), ("onnx", "int8"), ("openvino", "bf16")}
    assert all(r.error is None and r.docs_per_second > 0 for r in comp.rows), [r.error for r in comp.rows]
    base = measured["torch", "fp32"]
    eligible = [r for r in comp.rows if r.converted and r.ndcg_at_10 >= BACKEND_KEEP * base.ndcg_at_10]
    fastest = max([base, *eligible], key=lambda r: r.docs_per_second)
    assert (comp.backend, comp.precision) == ((fastest.backend, fastest.precision) if fastest.converted else (None, None))
    # pipeline.json keys -> `vecdoctor index --pipeline` encodes on that backend and precision
    write_corpus_jsonl(small.corpus, tmp_path / "corpus.jsonl")  # same texts: calibration reused
    (tmp_path / "pipeline.json").write_text(json.dumps(
        {"model": "minilm", "backend": "openvino", "model_precision": "int8", "mode": "hybrid"}))
    out = CliRunner().invoke(app, ["-q", "index", str(tmp_path / "corpus.jsonl"), "-o", str(tmp_path / "idx"),
                                   "--pipeline", str(tmp_path / "pipeline.json")])
    assert out.exit_code == 0, out.output
    config = Index.load(tmp_path / "idx").encoder_config
    assert (config["backend"], config["precision"]) == ("openvino", "int8")
    assert config["calibration"]  # calibrated on the indexed corpus


def test_index_rejects_an_unknown_backend_before_loading_anything(tmp_path):
    (tmp_path / "c.txt").write_text("one\ntwo\n")
    out = CliRunner().invoke(app, ["index", str(tmp_path / "c.txt"), "-o", str(tmp_path / "i"), "--backend", "tpu"])
    assert out.exit_code != 0 and "valid backends: torch, onnx, openvino" in out.output
    assert not (tmp_path / "i").exists()
