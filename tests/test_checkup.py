"""checkup, evaluate and compare-models end to end on a small real SciFact sample."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import retrieval_support as rs
from typer.testing import CliRunner

from vecdoctor.checkup.run import MIN_GAIN, checkup, write_checkup
from vecdoctor.cli import app
from vecdoctor.data import write_corpus_jsonl
from vecdoctor.errors import InputError
from vecdoctor.evaluate.metrics import evaluate_run, read_trec_run, sample_dataset
from vecdoctor.evaluate.variants import evaluate_variants

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
    else:  # judged queries on the whole corpus: a lead past the margin is taken
        assert result.pipeline.mode == best


def test_every_fix_verdict_matches_its_measurement(result):
    from vecdoctor.checkup.rules import TRANSFORMS

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


@pytest.fixture()
def tight(monkeypatch):
    """A 60-document sample and 10 sampled queries, so that a 120-document corpus is sampled."""
    from vecdoctor.checkup import sampling

    monkeypatch.setitem(sampling.QUICK, "max_docs", 60)
    monkeypatch.setitem(sampling.QUICK, "max_queries", 10)
    return sampling


QUICK_VARIANTS = ["bm25", "dense", "hybrid", "dense+abtt", "dense+window"]


@pytest.fixture(scope="module")
def quick(small):
    """``--quick`` on the 120-document corpus with a 60-document sample."""
    from vecdoctor.checkup import sampling

    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sampling.QUICK, "max_docs", 60)
        mp.setitem(sampling.QUICK, "max_queries", 10)
        return checkup(small, ["minilm"], quick=True, variants=QUICK_VARIANTS)


def test_quick_checkup_says_what_it_sampled(small, quick):
    assert quick.meta["quick"] is True and quick.meta["models_skipped"] == []
    assert quick.meta["sampled_from_documents"] == len(small.corpus)
    assert quick.meta["sampled_from_queries"] == len(small.qrels)
    # a corpus this small fits the budget: it is encoded whole and every number but the
    # encoding variants' is the whole corpus' own
    assert quick.meta["quick_plan"]["reach"] == "corpus" and quick.meta["frame"] == "corpus"
    assert quick.meta["documents"] == len(small.corpus)
    est = quick.meta["full_corpus_estimate"]
    assert est["dense"] == {"value": round(quick.variants.get("dense").ndcg, 4),
                            "how": "measured on the whole corpus"}


def test_the_quick_plan_is_made_from_token_counts_and_the_model_cost(small, minilm, tight):
    from vecdoctor.checkup.sampling import PROXY_TOKENS, Reach, corpus_tokens, plan_quick

    texts = [d.content for d in small.corpus]
    tokens, proxy = corpus_tokens(minilm, texts)
    lengths = minilm.token_lengths(texts)
    assert tokens == int(sum(min(n, minilm.max_length) for n in lengths))
    assert proxy == int(sum(min(n, PROXY_TOKENS) for n in lengths)) < tokens
    assert plan_quick(small, "minilm", budget=tokens).reach is Reach.CORPUS
    assert plan_quick(small, "minilm", budget=tokens - 1).reach is Reach.PROXY
    assert plan_quick(small, "minilm", budget=proxy - 1).reach is Reach.LEXICAL
    # the model's cost per token scales the count: minilm-l3-onnx costs half (3 layers)
    l3 = plan_quick(small, "minilm-l3-onnx", budget=proxy)
    assert l3.cost == 0.5 and "over the" not in l3.words() or l3.reach is not Reach.CORPUS
    assert "BM25's distractors only" in plan_quick(small, "minilm", budget=1).words()


def test_quick_measures_encoding_variants_on_a_fair_sample_and_the_rest_on_the_corpus(small, quick):
    # bm25, dense, hybrid and the transform on the whole corpus, windows on the sample
    assert {r.name for r in quick.variants.results} >= {"bm25", "dense", "hybrid", "dense+abtt"}
    assert quick.variants.num_docs == len(small.corpus)
    sample = quick.sample_variants
    assert sample is not None and sample.num_docs == 60 and sample.get("dense+window") is not None
    assert quick.meta["sample_design"]["neighbours_from"] == "bm25+dense"
    # the sample's dense distractors are the whole corpus' best dense matches
    est = quick.meta["full_corpus_estimate"]
    window = est["dense+window"]
    assert window["how"].startswith("the whole corpus' dense plus its gain")
    gain = sample.get("dense+window").ndcg - sample.get("dense").ndcg
    assert window["value"] == pytest.approx(quick.variants.get("dense").ndcg + gain, abs=1e-4)
    decision = next(d for d in quick.decisions if d.choice == "windows 256:128:max")
    assert f"vs dense {sample.get('dense').ndcg:.4f}" in decision.evidence


def test_a_lexical_sample_says_it_cannot_estimate_and_keeps_hybrid(small, tight, monkeypatch):
    # not even the first 128 tokens fit: no dense distractors
    monkeypatch.setitem(tight.QUICK, "encode_tokens", 1)
    quick = checkup(small, ["minilm"], quick=True, variants=["bm25", "dense", "hybrid"])
    assert quick.meta["frame"] == "lexical sample"
    assert quick.meta["sample_design"]["neighbours_from"] == "bm25"
    est = quick.meta["full_corpus_estimate"]
    assert est["dense"]["value"] is None and "cannot estimate" in est["dense"]["how"]
    assert est["bm25"]["value"] is not None
    assert quick.pipeline.mode == "hybrid"
    retrieval = next(d for d in quick.decisions if d.topic == "retrieval")
    assert "do not decide the mode" in retrieval.evidence


def test_quick_decisions_never_read_the_clock(small, quick, tight, monkeypatch):
    """The same pipeline when every clock reading says the machine crawls (1,000 s between
    two readings): no quick decision may depend on time."""
    import itertools
    import time as real_time

    calm = quick
    ticks = itertools.count(0, 1000.0)
    monkeypatch.setattr(real_time, "perf_counter", lambda: next(ticks))
    busy = checkup(small, ["minilm"], quick=True, variants=QUICK_VARIANTS)
    assert busy.pipeline == calm.pipeline
    assert [d.choice for d in busy.decisions if d.recommended and d.topic != "dense search"] == \
        [d.choice for d in calm.decisions if d.recommended and d.topic != "dense search"]


def test_quick_compares_several_models_on_a_sample_no_model_mined(small, tight):
    from types import SimpleNamespace

    from vecdoctor.evaluate.compare import compare_models
    from vecdoctor.evaluate.metrics import HARD_SHARE
    from vecdoctor.report.checkup import models_section

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
    caption = models_section(SimpleNamespace(comparison=quick.comparison, meta=quick.meta)).tables[0].caption
    assert "favours no model" in caption
    # the chosen model's variants then run on the whole corpus (it is small enough)
    assert quick.meta["frame"] == "corpus" and quick.variants.num_docs == len(small.corpus)


def test_installed_models_over_their_cost_budget_are_listed_not_measured(small, tight, monkeypatch):
    from vecdoctor.checkup.sampling import model_budget_skips

    monkeypatch.setitem(tight.QUICK, "model_tokens", 1)
    skips = model_budget_skips(["minilm", "minilm-l3-onnx", "minilm-int8-onnx"], small, named=False)
    # the cheapest (minilm-l3-onnx) and the reference (minilm) always run
    assert list(skips) == ["minilm-int8-onnx"] and "over the 1 budget" in skips["minilm-int8-onnx"]
    assert model_budget_skips(["minilm", "minilm-int8-onnx"], small, named=True) == {}


def test_self_supervised_checkup_saves_its_queries_for_reuse(small, tmp_path):
    from vecdoctor.data import Dataset, load_dataset

    corpus = Dataset(corpus=small.corpus[:80], name="bare")
    result = checkup(corpus, ["minilm-l3-onnx"], quick=True, variants=["bm25", "dense", "hybrid"])
    out = write_checkup(result, tmp_path / "report")
    again = load_dataset(out / "queries", "test")
    assert again.qrels == result.labels.qrels and again.queries == result.labels.queries
    assert len(again.corpus) == 80


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


def test_chunk_variants_run_where_the_diagnosis_found_long_texts(minilm):
    from types import SimpleNamespace

    from vecdoctor.checkup.stages import variant_names
    from vecdoctor.diagnose._common import Verdict

    def names(verdict, variants=None):
        diagnosis = SimpleNamespace(truncation=SimpleNamespace(verdict=verdict))
        return variant_names(variants, None, minilm, diagnosis)

    assert {"dense+chunks", "dense+chunks-first"} <= set(names(Verdict.WARN))
    assert {"dense+chunks", "dense+chunks-first"} <= set(names(Verdict.FAIL))
    assert not {"dense+chunks", "dense+chunks-first"} & set(names(Verdict.OK))
    assert names(Verdict.FAIL, ["bm25", "dense"]) == ["bm25", "dense"]  # the user's list stands


def test_the_report_says_what_failed_and_shows_no_empty_details(report_dir, result):
    import re

    html = (report_dir / "report.html").read_text()
    assert not re.search(r"<dd>\s*None\s*</dd>", html)  # no "split None"
    worst = str(result.diagnosis.worst)
    if worst != "ok":
        failing = [r["check"] for r in result.diagnosis.summary() if r["verdict"] == worst]
        assert f"{worst}: {', '.join(failing)}" in html
