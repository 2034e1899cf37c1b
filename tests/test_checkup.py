"""checkup, evaluate and compare-models end to end on a small real SciFact sample."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import retrieval_support as rs
from typer.testing import CliRunner

from vecdoctor.checkup.run import MIN_GAIN, checkup, decide, write_checkup
from vecdoctor.cli import app
from vecdoctor.data import write_corpus_jsonl
from vecdoctor.errors import InputError
from vecdoctor.evaluate.metrics import Evaluation, evaluate_run, read_trec_run, sample_dataset
from vecdoctor.evaluate.variants import VariantResult, VariantsReport, evaluate_variants

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def small(beir_dir):
    from vecdoctor.data import load_dataset

    return sample_dataset(load_dataset(beir_dir), max_queries=15, max_docs=120, seed=0)


@pytest.fixture(scope="module")
def result(small):
    return checkup(small, ["minilm", "minilm-l3-onnx"], variants=["bm25", "dense", "dense+abtt", "hybrid", "int8"])


@pytest.fixture(scope="module")
def report_dir(result, tmp_path_factory):
    out = tmp_path_factory.mktemp("checkup") / "report"
    write_checkup(result, out)
    return out


def test_checkup_writes_report_pipeline_and_runs(report_dir, result):
    assert {p.name for p in report_dir.iterdir()} >= {"report.html", "report.json", "pipeline.json", "runs"}
    pipeline = json.loads((report_dir / "pipeline.json").read_text())
    assert pipeline["model"] in {"minilm", "minilm-l3-onnx"}
    assert pipeline["mode"] in {"bm25", "dense", "hybrid"}
    assert pipeline["storage"] in {"float32", "int8"}
    assert (pipeline["class"], pipeline["format_version"]) == ("Pipeline", 2)
    data = json.loads((report_dir / "report.json").read_text())
    assert {r["model"] for r in data["model_comparison"]["models"]} == {"minilm", "minilm-l3-onnx"}
    assert data["diagnosis"]["summary"]
    names = {r["variant"] for r in data["variants"]["variants"]}
    assert {"bm25", "dense", "dense+abtt", "hybrid", "int8"} <= names
    for name in names:
        assert (report_dir / "runs" / f"{name}.trec").is_file()
    # how the dense search of the recommended pipeline runs at this size, with the measurement
    search = [d for d in data["decisions"] if d["topic"] == "dense search"]
    if pipeline["mode"] != "bm25":
        assert len(search) == 1
        assert search[0]["choice"] == ("exact" if pipeline["storage"] == "float32"
                                       else "exact over int8 codes")
        if pipeline["storage"] == "float32":
            assert f"over {len(result.dataset.corpus)} vectors, within the 10 ms budget" in \
                search[0]["evidence"]


def test_every_report_figure_keeps_its_labels_apart(result):
    """Every figure of the checkup report (variants, models, the diagnosis) is drawn with no
    two tick labels overlapping."""
    from vecdoctor.report.checkup import checkup_sections

    figures = [f for section in checkup_sections(result) for f in section.figures]
    assert len(figures) >= 4
    assert {f.title: f.png.crowded for f in figures if f.png.crowded} == {}


def test_saved_runs_reproduce_the_reported_numbers(report_dir, result, small):
    for r in result.variants.results:
        run = read_trec_run(report_dir / "runs" / f"{r.name}.trec")
        again = evaluate_run(small.qrels, run, ("ndcg@10",)).metrics["ndcg@10"]
        assert again == pytest.approx(r.ndcg, abs=1e-4)


def test_retrieval_choice_is_the_best_measured_mode(result):
    modes = {n: result.variants.get(n).ndcg for n in ("bm25", "dense", "hybrid")}
    best = max(modes, key=modes.get)
    if best == "hybrid" or modes[best] - modes["hybrid"] < MIN_GAIN:
        assert result.pipeline.mode == "hybrid"
    else:
        assert result.pipeline.mode in {best, "hybrid"}


@pytest.mark.parametrize(("dense_gain", "mode"), [(0.004, "hybrid"), (0.08, "dense"), (-0.02, "hybrid")])
def test_hybrid_stays_unless_one_retriever_is_measurably_better(dense_gain, mode):
    hybrid = {f"q{i}": 0.5 + 0.01 * (i % 3) for i in range(60)}
    results = [
        _variant("bm25", {k: 0.3 for k in hybrid}),
        _variant("dense", {k: v + dense_gain for k, v in hybrid.items()}),
        _variant("hybrid", hybrid),
    ]
    pipeline, decisions = decide(VariantsReport("toy", "minilm", 10, 60, False, results), "minilm")
    assert pipeline.mode == mode
    evidence = next(d.evidence for d in decisions if d.topic == "retrieval")
    assert "bm25 0.3000" in evidence
    if dense_gain == 0.004:
        assert "not measurably better than hybrid (Δ +0.0040" in evidence


def test_every_fix_verdict_matches_its_measurement(result):
    from vecdoctor.checkup.run import TRANSFORMS

    variant_of = {value: name for name, value in TRANSFORMS}
    helping = []
    for d in result.decisions:
        if d.topic == "transform":
            r = result.variants.get(variant_of[d.choice])
            helps = r.delta_ndcg >= MIN_GAIN and r.p_value < 0.05
            assert not d.recommended or (helps and result.pipeline.mode != "bm25")
            assert f"{r.ndcg:.4f}" in d.evidence
            if helps:
                helping.append((r.ndcg, d))
    chosen = [d for d in result.decisions if d.topic == "transform" and d.recommended]
    if helping and result.pipeline.mode != "bm25":
        assert chosen == [max(helping, key=lambda x: x[0])[1]]
    else:
        assert chosen == []


def test_the_best_helping_transform_is_chosen_and_whitening_k_is_remembered():
    from vecdoctor.checkup.run import whitening_kept
    from vecdoctor.evaluate.metrics import randomization_test

    base = {f"q{i}": 0.5 for i in range(50)}
    results = [_variant("bm25", {k: 0.4 for k in base}), _variant("dense", base),
               _variant("hybrid", {k: 0.55 for k in base}),
               _variant("dense+whiten", {k: 0.45 for k in base}, "dense"),
               _variant("dense+whiten-k", {f"q{i}": 0.62 + 0.001 * (i % 5) for i in range(50)},
                        "dense"),
               _variant("dense+abtt", {f"q{i}": 0.58 + 0.001 * (i % 7) for i in range(50)},
                        "dense")]
    for r in results[3:]:
        r.delta_ndcg = r.ndcg - results[1].ndcg
        r.p_value = randomization_test(r.evaluation.per_query["ndcg@10"], base)
    pipeline, decisions = decide(VariantsReport("toy", "minilm", 10, 50, False, results), "minilm")
    verdicts = {d.choice: d.recommended for d in decisions if d.topic == "transform"}
    assert verdicts == {"whitening": False, "whitening-k": True, "abtt": False}
    assert pipeline.transform == "whitening" and whitening_kept(decisions)


def _variant(name, per_query, baseline=None):
    ev = Evaluation(metrics={"ndcg@10": sum(per_query.values()) / len(per_query)},
                    per_query={"ndcg@10": per_query}, num_queries=len(per_query))
    return VariantResult(name, name, ev, 10.0, 1.0, 2.0, 1536 if name != "int8" else 384, {}, baseline)


def test_decide_recommends_only_fixes_that_help():
    from vecdoctor.evaluate.metrics import randomization_test

    base = {f"q{i}": 0.5 for i in range(50)}
    better = {f"q{i}": 0.6 + 0.001 * (i % 7) for i in range(50)}
    worse = {f"q{i}": 0.45 for i in range(50)}
    results = [
        _variant("bm25", {k: 0.4 for k in base}),
        _variant("dense", base),
        _variant("hybrid", {k: 0.55 for k in base}),
        _variant("dense+whiten", worse, "dense"),
        _variant("dense+abtt", better, "dense"),
        _variant("int8", {k: v * 0.995 for k, v in base.items()}, "dense"),
    ]
    for r in results:
        if r.baseline:
            ref = next(x for x in results if x.name == r.baseline)
            r.delta_ndcg = r.ndcg - ref.ndcg
            r.p_value = randomization_test(r.evaluation.per_query["ndcg@10"], ref.evaluation.per_query["ndcg@10"])
    report = VariantsReport("toy", "minilm", 10, 50, False, results)
    pipeline, decisions = decide(report, "minilm")
    assert pipeline.mode == "hybrid"
    assert pipeline.transform == "abtt"
    assert pipeline.storage == "int8"
    verdicts = {(d.topic, d.choice): d.recommended for d in decisions}
    assert verdicts[("transform", "whitening")] is False
    assert verdicts[("transform", "abtt")] is True


@pytest.mark.parametrize("gain", [0.08, -0.03])
def test_decide_keeps_a_reranker_only_where_it_beats_hybrid(gain):
    from vecdoctor.evaluate.metrics import randomization_test

    hybrid = {f"q{i}": 0.5 + 0.002 * (i % 5) for i in range(50)}
    results = [
        _variant("bm25", {k: 0.4 for k in hybrid}),
        _variant("dense", {k: 0.45 for k in hybrid}),
        _variant("hybrid", hybrid),
        _variant("hybrid+rerank", {k: v + gain for k, v in hybrid.items()}, "hybrid"),
    ]
    ref, rr = results[2], results[3]
    rr.delta_ndcg = rr.ndcg - ref.ndcg
    rr.p_value = randomization_test(rr.evaluation.per_query["ndcg@10"], ref.evaluation.per_query["ndcg@10"])
    how = {"reranker": "/models/ce", "fusion": "rrf", "depth": 30, "backend": "onnx", "precision": "int8"}
    report = VariantsReport("toy", "minilm", 10, 50, False, results, rerank=how)
    pipeline, decisions = decide(report, "minilm")
    verdict = next(d for d in decisions if d.topic == "rerank")
    if gain > 0:
        assert verdict.recommended
        assert (pipeline.rerank, pipeline.rerank_fusion) == ("/models/ce", "rrf")
        assert (pipeline.rerank_backend, pipeline.rerank_precision) == ("onnx", "int8")
    else:
        assert not verdict.recommended
        assert pipeline.rerank is None and pipeline.rerank_backend is None


def test_time_budget_skips_slow_models_but_never_all(small):
    from vecdoctor.evaluate.compare import compare_models

    models = ["minilm", "minilm-l3-onnx"]
    tight = compare_models(small, [*models, "minilm-int8-onnx"], time_budget=1e-6)
    measured = [r for r in tight.rows if r.measured]
    skipped = [r for r in tight.rows if r.skipped]
    # the fastest model and the default (the reference) run; the third is skipped
    assert len(measured) == 2 and "minilm" in {r.model for r in measured} and len(skipped) == 1
    assert tight.recommended in {r.model for r in measured}
    assert skipped[0].ndcg_at_10 is None and skipped[0].docs_per_second > 0
    assert "over the 0 s budget" in skipped[0].skipped and "without --quick" in skipped[0].skipped
    assert skipped[0].to_dict()["skipped"] == skipped[0].skipped
    roomy = compare_models(small, models, time_budget=1e9)
    assert all(r.measured for r in roomy.rows) and len(roomy.rows) == 2
    # the probe's encoder is the one measured: same numbers as a comparison without a budget
    plain = compare_models(small, ["minilm-l3-onnx"])
    row = next(r for r in roomy.rows if r.model == "minilm-l3-onnx")
    assert row.ndcg_at_10 == pytest.approx(plain.rows[0].ndcg_at_10, abs=1e-6)
    with pytest.raises(InputError, match="time_budget must be > 0"):
        compare_models(small, models, time_budget=0)
    # rows of registry models name the precision of their shipped weights
    assert {r.precision for r in roomy.rows} == {"fp32"}
    from vecdoctor.models import resolve

    assert (resolve("minilm-int8-onnx").weights, resolve("minilm").weights) == ("int8", "fp32")


def test_cli_compare_models_time_budget(small, tmp_path):
    folder = rs.write_beir(small, tmp_path / "data")
    res = CliRunner().invoke(app, ["compare-models", str(folder), "-m",
                                   "minilm,minilm-l3-onnx,minilm-int8-onnx", "--time-budget", "0.000001"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)["models"]
    assert sorted(bool(r["skipped"]) for r in rows) == [False, False, True]
    assert not next(r for r in rows if r["model"] == "minilm")["skipped"]  # the reference runs


def test_quick_checkup_says_what_it_sampled(small, tmp_path):
    quick = checkup(small, ["minilm"], quick=True, variants=["bm25", "dense", "hybrid"])
    assert quick.meta["quick"] is True and quick.meta["models_skipped"] == []
    assert quick.meta["sampled_from_documents"] == len(small.corpus)
    assert quick.meta["sampled_from_queries"] == len(small.qrels)
    assert quick.meta["documents"] <= len(small.corpus)


def test_a_quick_sample_reports_estimates_for_the_whole_corpus(small):
    import dataclasses
    from types import SimpleNamespace

    from vecdoctor.checkup.run import _sample_estimates
    from vecdoctor.report.checkup import variants_section

    ds = sample_dataset(small, 10, 60, seed=0, hard_share=0.5)
    report = evaluate_variants(ds, "minilm", ["bm25"])
    found = _sample_estimates(ds, report)
    design = found["sample_design"]
    assert design["full_documents"] == len(small.corpus) and design["neighbours"] > 0
    assert design["fixed"] + design["random"] == len(ds.corpus)
    # random documents stand for >= 1 document each, so no estimated rank is above the sampled one
    assert 0 < found["full_corpus_estimate"]["bm25"] <= round(report.results[0].evaluation.metrics["ndcg@10"], 4)
    whole = dataclasses.replace(small, sample=None)
    assert _sample_estimates(whole, report) == {}  # not a sample: nothing to carry over
    section = variants_section(SimpleNamespace(variants=report, meta=found))
    assert "est. nDCG@10, whole corpus" in section.tables[0].columns
    said = " ".join(section.paragraphs)
    assert "best matches (bm25)" in said and "dense numbers on the sample are optimistic" in said


def test_quick_sample_takes_dense_matches_within_its_time_budget(small, minilm, monkeypatch):
    import numpy as np

    from vecdoctor.checkup import run

    monkeypatch.setitem(run.QUICK, "max_docs", 60)
    monkeypatch.setitem(run.QUICK, "max_queries", 10)
    said: list[str] = []
    dense = run._quick_sample(small, "minilm", 0, said.append)
    assert dense.sample.neighbours_from == "bm25+dense" and len(dense.corpus) == 60
    # rank 1 of every query and retriever comes first: with room for it, each query's best dense
    # match in the whole corpus is in the sample
    assert dense.sample.neighbours >= 2 * len(dense.qrels)
    docs = minilm.encode_documents([d.content for d in small.corpus])
    ids = {d.id for d in dense.corpus}
    for q in dense.qrels:
        best = int(np.argmax(docs @ minilm.encode_queries([dense.queries[q]])[0]))
        assert small.corpus[best].id in ids
    monkeypatch.setitem(run.QUICK, "neighbour_seconds", 0)
    lexical = run._quick_sample(small, "minilm", 0, said.append)
    assert lexical.sample.neighbours_from == "bm25" and set(lexical.qrels) == set(dense.qrels)
    assert "dense neighbours skipped" in said[-1] and "over the 0 s budget" in said[-1]
    # whole texts, then their first 128 tokens, were both timed before giving up
    assert "first 256 tokens or about" in said[-1] and "first 128 tokens of each" in said[-1]


def test_quick_sample_reads_only_the_first_tokens_when_whole_texts_take_too_long(small, monkeypatch):
    from vecdoctor.checkup import run

    monkeypatch.setitem(run.QUICK, "max_docs", 60)
    monkeypatch.setitem(run.QUICK, "max_queries", 10)
    # time is what the budget reads: whole texts "take" 1000 s, their first 128 tokens 10 s
    monkeypatch.setattr(run, "_corpus_seconds", lambda enc, texts, n: 1000.0 if enc.max_length > 128 else 10.0)
    said: list[str] = []
    short = run._quick_sample(small, "minilm", 0, said.append)
    assert short.sample.neighbours_from == "bm25+dense"
    assert "first 128 tokens of each, about 10 s" in said[-1]
    # the neighbours are the ones minilm finds reading 128 tokens
    from vecdoctor.encode.encoder import Encoder
    from vecdoctor.evaluate.metrics import HARD_SHARE

    again = sample_dataset(small, 10, 60, 0, hard_share=HARD_SHARE, encoder=Encoder("minilm", max_length=128))
    assert {d.id for d in short.corpus} == {d.id for d in again.corpus}


def test_quick_compares_several_models_on_a_sample_no_model_mined(small, monkeypatch):
    from types import SimpleNamespace

    from vecdoctor.checkup import run
    from vecdoctor.evaluate.compare import compare_models
    from vecdoctor.evaluate.metrics import HARD_SHARE
    from vecdoctor.report.checkup import models_section

    monkeypatch.setitem(run.QUICK, "max_docs", 60)
    monkeypatch.setitem(run.QUICK, "max_queries", 10)
    models = ["minilm", "minilm-l3-onnx"]
    quick = checkup(small, models, quick=True, variants=["bm25", "dense"])
    # the models met the sampled queries with BM25's hard matches only (neither model's own)
    assert quick.meta["model_sample"]["neighbours_from"] == "bm25"
    lexical = sample_dataset(small, 10, 60, 0, hard_share=HARD_SHARE)
    assert quick.meta["model_sample"]["documents"] == len(lexical.corpus)
    alone = compare_models(lexical, models)
    for row in quick.comparison.rows:
        same = next(r for r in alone.rows if r.model == row.model)
        assert row.ndcg_on_sample == pytest.approx(same.ndcg_on_sample, abs=1e-9)
        assert row.ndcg_at_10 == pytest.approx(same.ndcg_at_10, abs=1e-9)
    # the variants then run on the same queries with the chosen model's dense matches added
    assert quick.meta["sample_design"]["neighbours_from"] == "bm25+dense"
    assert set(quick.dataset.qrels) == set(lexical.qrels)
    caption = models_section(SimpleNamespace(comparison=quick.comparison, meta=quick.meta)).tables[0].caption
    assert "favours no model" in caption
    # one model: its own dense matches from the start, and no second sample
    one = checkup(small, ["minilm"], quick=True, variants=["bm25", "dense"])
    assert "model_sample" not in one.meta
    assert one.meta["sample_design"]["neighbours_from"] == "bm25+dense"


def test_unknown_variant_lists_valid_ones(small):
    with pytest.raises(InputError, match="valid variants: bm25, dense"):
        evaluate_variants(small, "minilm", ["dense", "dense+magic"])


def test_report_folder_is_not_written_over_foreign_content(result, tmp_path):
    target = tmp_path / "precious"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not a vecdoctor checkup report"):
        write_checkup(result, target)
    assert (target / "notes.txt").read_text() == "keep me"


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
def test_report_renders_in_a_real_browser(report_dir, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.fail("headless Chromium is required for this test (Debian package 'chromium'; .ci/run installs it)")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    url = (report_dir / "report.html").as_uri()
    dom = subprocess.run([browser, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    for title in ("Recommended pipeline", "Pipeline variants", "Model comparison", "Summary", "Isotropy",
                  "Quantization"):
        assert title in dom, f"section {title!r} missing from the rendered page"
    assert dom.count("data:image/png;base64,") >= 5
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "checkup-report.png"
    subprocess.run([browser, *flags, "--window-size=1280,4000", f"--screenshot={shot}", url],
                   capture_output=True, timeout=120, check=True)
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 20_000


runner = CliRunner()


def test_cli_evaluate_writes_runs(small, tmp_path):
    data = rs.write_beir(small, tmp_path / "data")
    out = tmp_path / "eval"
    result = runner.invoke(app, ["evaluate", str(data), "--variants", "bm25,dense", "-o", str(out)])
    assert result.exit_code == 0, result.output
    table = json.loads(result.stdout)["variants"]
    assert [r["variant"] for r in table] == ["bm25", "dense"]
    assert (out / "runs" / "dense.trec").is_file() and (out / "results.json").is_file()


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        ("no-corpus", [], "no corpus"),
        ("no-qrels", [], "test.tsv: not found"),
        ("no-queries", [], "no queries.jsonl"),
        ("ok", ["--split", "dev"], "dev.tsv: not found"),
        ("ok", ["--variants", "dense,nope"], "unknown variant(s) 'nope'"),
        ("ok", ["-m", "mpnet-large-xl"], "unknown model"),
    ],
)
def test_cli_evaluate_bad_input(small, tmp_path, setup, args, message):
    data = tmp_path / "data"
    if setup == "no-corpus":
        data.mkdir()
        (data / "queries.jsonl").write_text('{"_id": "q", "text": "x"}\n')
    else:
        rs.write_beir(small, data, with_qrels=setup != "no-qrels", with_queries=setup != "no-queries")
        if setup == "no-qrels":
            (data / "qrels").mkdir()
    out = tmp_path / "out"
    result = runner.invoke(app, ["evaluate", str(data), "-o", str(out), *args])
    assert result.exit_code == 1 and message in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


@pytest.mark.parametrize(("split", "message"), [
    ("dev", "--tune-split dev: "), ("test", "--tune-split test is the evaluated split")])
def test_cli_checkup_refuses_a_tuning_split_it_cannot_use(small, tmp_path, split, message):
    data = rs.write_beir(small, tmp_path / "data")
    out = tmp_path / "out"
    result = runner.invoke(app, ["checkup", str(data), "-o", str(out), "--tune-split", split])
    assert result.exit_code == 1 and message in result.output
    assert "Traceback" not in result.output and not out.exists()


def test_cli_checkup_on_unlabelled_corpus_uses_self_supervised_queries(small, tmp_path):
    data = tmp_path / "corpus.jsonl"
    write_corpus_jsonl(small.corpus[:60], data)
    out = tmp_path / "report"
    result = runner.invoke(app, ["checkup", str(data), "-m", "minilm-l3-onnx", "-o", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["meta"]["self_supervised"] is True
    assert "self-supervised" in (out / "report.html").read_text()


@pytest.mark.parametrize("chunk_gain", [0.08, 0.0])
def test_long_text_strategy_answers_the_truncation_finding(chunk_gain):
    """The best long-text strategy that passes the gate is chosen; when none does, the decision
    to keep truncation says so next to the diagnosis' share of truncated texts."""
    from types import SimpleNamespace

    from vecdoctor.evaluate.metrics import randomization_test

    base = {f"q{i}": 0.5 for i in range(50)}
    results = [_variant("bm25", {k: 0.4 for k in base}), _variant("dense", base),
               _variant("hybrid", {k: 0.55 for k in base}),
               _variant("dense+window", {f"q{i}": 0.5 + 0.003 * (i % 2) for i in range(50)}, "dense"),
               _variant("dense+chunks", {f"q{i}": 0.5 + chunk_gain + 0.001 * (i % 7)
                                         for i in range(50)}, "dense"),
               _variant("dense+chunks-first", {f"q{i}": 0.5 + chunk_gain / 2 + 0.001 * (i % 3)
                                               for i in range(50)}, "dense")]
    for r in results[3:]:
        r.delta_ndcg = r.ndcg - results[1].ndcg
        r.p_value = randomization_test(r.evaluation.per_query["ndcg@10"], base)
    truncation = SimpleNamespace(share_truncated=0.42)
    pipeline, decisions = decide(VariantsReport("toy", "minilm", 10, 50, False, results), "minilm",
                                 truncation=truncation)
    long_text = {d.choice: d for d in decisions if d.topic == "long texts"}
    if chunk_gain:
        assert str(pipeline.chunks) == "max" and pipeline.window is None
        assert long_text["chunks max"].recommended
        assert not long_text["chunks max+first"].recommended  # passes, but scores lower
        assert "truncation" not in long_text
    else:
        assert pipeline.chunks is None and pipeline.window is None
        kept = long_text["truncation"]
        assert kept.recommended and "42% of texts" in kept.evidence
        assert "dense+chunks nDCG@10" in kept.evidence and "dense+window nDCG@10" in kept.evidence
    assert not long_text["windows 256:128:max"].recommended  # +0.0015: below the gate


def _long_text_decision(gains: dict[str, list[float]], n: int = 60):
    """decide() on toy per-query nDCG@10: dense at 0.5 everywhere, each named long-text variant
    at 0.5 plus its per-query gain (repeated over the queries)."""
    from vecdoctor.evaluate.metrics import randomization_test

    base = {f"q{i}": 0.5 for i in range(n)}
    results = [_variant("bm25", {k: 0.4 for k in base}), _variant("dense", base),
               _variant("hybrid", {k: 0.55 for k in base})]
    for name, gain in gains.items():
        r = _variant(name, {f"q{i}": 0.5 + gain[i % len(gain)] for i in range(n)}, "dense")
        r.delta_ndcg = r.ndcg - 0.5
        r.p_value = randomization_test(r.evaluation.per_query["ndcg@10"], base)
        results.append(r)
    pipeline, decisions = decide(VariantsReport("toy", "minilm", 10, n, False, results), "minilm")
    return pipeline, {d.choice: d for d in decisions if d.topic == "long texts"}


def test_two_chunk_scorings_are_one_decision_and_a_tie_keeps_maxp_plus_first():
    """MaxP scores higher than MaxP + first, and only MaxP passes the gate on its own (p = 0.015
    against dense; MaxP + first p = 0.11); the two are not measurably different (p = 0.42), so
    the chunk index is kept with MaxP + first."""
    pipeline, long_text = _long_text_decision({
        "dense+chunks": [0.2, -0.1, 0.0, 0.05, -0.05, 0.1],
        "dense+chunks-first": [0.0, -0.1, 0.2, 0.05, -0.05, 0.02]})
    assert long_text["chunks max"].gain > long_text["chunks max+first"].gain
    assert str(pipeline.chunks) == "max+first"
    chosen = long_text["chunks max+first"]
    assert chosen.recommended and not long_text["chunks max"].recommended
    assert "MaxP is not measurably better than MaxP + first" in chosen.evidence
    assert "two scorings of one index" in chosen.evidence


def test_a_chunk_scoring_needs_half_the_p_value_when_both_are_measured():
    """p between 0.025 and 0.05 passes the plain gate, but two scorings of one index are two
    looks: the chunk index is not kept on it; measured alone the same scoring is kept."""
    from vecdoctor.evaluate.metrics import randomization_test

    gain = [0.2, -0.1, 0.0, 0.05, -0.05, 0.06]
    p = randomization_test({f"q{i}": 0.5 + gain[i % 6] for i in range(60)},
                           {f"q{i}": 0.5 for i in range(60)})
    assert 0.025 <= p < 0.05, p  # the toy data sits where the correction matters
    pipeline, long_text = _long_text_decision({"dense+chunks": gain, "dense+chunks-first": [0.0]})
    assert pipeline.chunks is None
    pipeline, long_text = _long_text_decision({"dense+chunks": gain})
    assert str(pipeline.chunks) == "max" and long_text["chunks max"].recommended


def test_chunks_replace_passing_windows_only_when_measurably_better():
    windows = [0.06, 0.04, 0.05]
    pipeline, long_text = _long_text_decision({"dense+window": windows,
                                               "dense+chunks": [0.07, 0.04, 0.05]})
    assert str(pipeline.window) == "256:128:max" and pipeline.chunks is None
    assert "the cheaper windows stay" in long_text["windows 256:128:max"].evidence
    pipeline, _ = _long_text_decision({"dense+window": windows, "dense+chunks": [0.12, 0.1, 0.11]})
    assert str(pipeline.chunks) == "max" and pipeline.window is None


def test_chunk_variants_run_where_the_diagnosis_found_long_texts(minilm):
    from types import SimpleNamespace

    from vecdoctor.checkup.run import _variant_names
    from vecdoctor.diagnose._common import Verdict

    def names(verdict, variants=None):
        diagnosis = SimpleNamespace(truncation=SimpleNamespace(verdict=verdict))
        return _variant_names(variants, None, minilm, diagnosis)

    assert {"dense+chunks", "dense+chunks-first"} <= set(names(Verdict.WARN))
    assert {"dense+chunks", "dense+chunks-first"} <= set(names(Verdict.FAIL))
    assert not {"dense+chunks", "dense+chunks-first"} & set(names(Verdict.OK))
    assert names(Verdict.FAIL, ["bm25", "dense"]) == ["bm25", "dense"]  # the user's list stands


def test_what_to_do_lists_recommended_steps_by_measured_gain():
    from types import SimpleNamespace

    from vecdoctor.checkup.run import Decision
    from vecdoctor.report.checkup import todo_section

    decisions = [Decision("model", "minilm", True, "tie"),
                 Decision("retrieval", "hybrid", True, "hybrid 0.71", 0.03),
                 Decision("transform", "abtt", False, "abtt 0.60", -0.01),
                 Decision("long texts", "chunks max+first", True, "chunks 0.67", 0.05),
                 Decision("precision", "int8", True, "int8 keeps 99.6%", -0.002),
                 Decision("confirmation", "recommended pipeline", True, "recommended 0.72")]
    section = todo_section(SimpleNamespace(decisions=decisions))
    lines = section.paragraphs
    assert [line.split(":")[0] for line in lines[:4]] == [
        "1. long texts", "2. retrieval", "3. precision", "4. model"]
    assert "(+0.0500 nDCG@10)" in lines[0] and "(-0.0020 nDCG@10)" in lines[2]
    assert "transform abtt" in lines[4] and "recommended 0.72" in lines[5]
