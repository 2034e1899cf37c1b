"""The benchmark harness (benchmarks/harness.py) and the rules every benchmark script keeps:
short functions, one way to time, take percentiles and write a result, results named
``results/<benchmark>/<cpu>-<variant>.json``."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import harness  # noqa: E402

HELPERS = {"harness", "peer_env", "peer_worker"}  # the harness and the peer process' helpers
SCRIPTS = sorted(p for p in BENCHMARKS.glob("*.py") if p.stem not in HELPERS)


def test_cpu_names_come_from_family_and_model():
    amd = "AMD EPYC 7B13 64-Core Processor"
    assert harness.cpu_name({"cpu": amd, "cpu_family": "25", "cpu_model": "1"}) == "zen3"
    assert harness.cpu_name({"cpu": amd, "cpu_family": "25", "cpu_model": "17"}) == "zen4"
    assert harness.cpu_name({"cpu": amd, "cpu_family": "26", "cpu_model": "2"}) == "zen5"
    xeon = "Intel(R) Xeon(R) Platinum 8480+"
    assert harness.cpu_name({"cpu": xeon, "cpu_family": "6", "cpu_model": "143"}) == "sapphire-rapids"
    assert harness.cpu_name({"cpu": xeon, "cpu_family": "6", "cpu_model": "999"}) == "intel-m999"
    # without family and model: the model name, and the instruction set when it tells more
    assert harness.cpu_name({"cpu": "AMD EPYC", "isa": ["avx2", "avx512f"]}) == "amd-epyc-avx512"
    assert harness.cpu_name({}) == "unknown"
    assert harness.machine()["cpu_name"] == harness.cpu_name(harness.machine())


def test_percentiles_scale_and_name():
    assert harness.percentiles([0.001, 0.002, 0.003], (50,), scale=1000, suffix="_ms") == {"p50_ms": 2.0}
    spread = harness.percentiles(list(range(101)))
    assert spread == {"p50": 50.0, "p95": 95.0, "p99": 99.0}
    with pytest.raises(ValueError):
        harness.percentiles([])


def test_interleaved_rotates_the_order_each_round():
    calls: list[tuple[str, int]] = []
    variants = {name: (lambda r, name=name: calls.append((name, r)) or name) for name in "abc"}
    seconds, values = harness.interleaved(variants, rounds=3, warmup=False)
    assert calls == [("a", 0), ("b", 0), ("c", 0), ("b", 1), ("c", 1), ("a", 1),
                     ("c", 2), ("a", 2), ("b", 2)]
    assert values == {"a": ["a"] * 3, "b": ["b"] * 3, "c": ["c"] * 3}
    assert all(len(s) == 3 and min(s) >= 0 for s in seconds.values())


def test_a_variant_that_times_itself_reports_its_own_seconds():
    seconds, values = harness.interleaved({"worker": lambda r: harness.Measured(r * 2, 5.0 + r)},
                                          rounds=2, warmup=True)
    assert seconds == {"worker": [5.0, 6.0]} and values == {"worker": [0, 2]}


def test_paired_ratio_compares_round_by_round():
    ratio = harness.paired_ratio([2.0, 4.0, 6.0], [1.0, 1.0, 2.0])
    assert ratio["ratio"] == 3.0 and ratio["round_ratio_median"] == 3.0 and ratio["rounds"] == 3
    with pytest.raises(ValueError):
        harness.paired_ratio([1.0], [1.0, 2.0])


def test_ndcg_of_a_run_is_vecdoctors_ndcg():
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}}
    run = {"q1": {"d1": 2.0, "d3": 1.0}, "q2": {"d3": 2.0, "d2": 1.0}}
    # q1 finds its document first (1.0), q2 second (1 / log2(3))
    assert harness.ndcg_of_run(run, qrels) == round((1.0 + 1 / 1.5849625007211562) / 2, 4)


def test_ndcg_through_the_searcher_matches_vecdoctors_evaluation(real_corpus, minilm):
    from vecdoctor.data import Dataset
    from vecdoctor.evaluate.saved import evaluate_index
    from vecdoctor.index import Index
    from vecdoctor.search.searcher import Searcher

    docs = real_corpus[:60]
    queries = {f"q{i}": " ".join(docs[i].text.split()[:8]) for i in range(0, 60, 4)}
    qrels = {f"q{i}": {docs[i].id: 1} for i in range(0, 60, 4)}
    index = Index.build(docs, minilm, baseline=False)
    dataset = Dataset(corpus=docs, queries=queries, qrels=qrels)
    for mode in ("bm25", "hybrid"):
        expected = evaluate_index(index, dataset, [mode]).results[0].ndcg
        assert harness.ndcg_at_10(Searcher(index), queries, qrels, mode=mode) == round(expected, 4)
    assert 0 < harness.ndcg_at_10(Searcher(index), queries, qrels, mode="hybrid") <= 1


def test_write_result_names_the_file_by_benchmark_cpu_and_variant(tmp_path, monkeypatch):
    monkeypatch.setattr(harness, "RESULTS", tmp_path)
    facts = {**harness.machine(), "cpu_family": "25", "cpu_model": "17", "cpu": "AMD EPYC"}
    path = harness.write_result("encode_speed", {"machine": facts, "rows": [1]}, "peer")
    assert path == tmp_path / "encode_speed" / "zen4-peer.json"
    body = json.loads(path.read_text())
    assert body["benchmark"] == "encode_speed" and body["variant"] == "peer"
    assert body["machine"]["cpu_model"] == "17" and body["rows"] == [1]
    assert "vecdoctor" in body["versions"] and body["command"]
    assert [b for b, _, _ in harness.read_results(tmp_path)] == ["encode_speed"]
    with pytest.raises(ValueError, match="lower-case"):
        harness.write_result("encode_speed", {"machine": facts}, "Peer Run")


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


def test_benchmark_functions_and_modules_are_short():
    long = []
    for path in BENCHMARKS.glob("*.py"):
        if (n := len(path.read_text().splitlines())) > 500:
            long.append(f"{path.name}: {n} lines")
        for node in ast.walk(_tree(path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (
                    lines := (node.end_lineno or node.lineno) - node.lineno + 1) > 80:
                long.append(f"{path.name}:{node.name}: {lines} lines")
    assert long == []


def test_every_benchmark_uses_the_harness():
    """Machine facts, versions, percentiles and result files come from the harness alone."""
    wrong = []
    for path in SCRIPTS:
        text = path.read_text()
        tree = _tree(path)
        imports = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                   and n.module == "harness" for a in n.names}
        if "write_result" not in imports:
            wrong.append(f"{path.name}: does not write through harness.write_result")
        defined = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        for own in ("machine", "versions", "percentiles", "cpu_facts", "write_result"):
            if own in defined:
                wrong.append(f"{path.name}: defines its own {own}()")
        for needle in ("np.percentile", "statistics.median", "pytrec_eval.RelevanceEvaluator(qrels, {\"ndcg_cut.10\"})"):
            if needle in text:
                wrong.append(f"{path.name}: {needle}")
    assert wrong == []


def test_result_files_are_named_by_benchmark_cpu_and_variant():
    scripts = {p.stem for p in SCRIPTS}
    wrong = []
    for path in (BENCHMARKS / "results").rglob("*"):
        rel = path.relative_to(BENCHMARKS / "results")
        if path.is_dir() or rel.parts[0].startswith(".") or rel.parts[0] == "fuzz-crashes":
            continue
        if len(rel.parts) != 2 or rel.parts[0] not in scripts or path.suffix not in {".json", ".png"}:
            wrong.append(str(rel))
        elif path.suffix == ".json":
            json.loads(path.read_text())  # every result is valid JSON
    assert wrong == []


@pytest.mark.parametrize("script", [p.name for p in SCRIPTS])
def test_every_benchmark_answers_help(script):
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout


def test_the_readme_shows_the_decisions_result_as_it_is():
    """The README's decisions table is the benchmark's own rendering of the result it names."""
    import re

    from decisions import table

    readme = (BENCHMARKS.parent / "README.md").read_text()
    found = re.search(r"<!-- decisions table: python benchmarks/decisions.py --table (\S+) -->\n"
                      r"((?:\|.*\n)+)", readme)
    assert found, "the README lost its decisions table or the comment naming its result"
    result = json.loads((BENCHMARKS.parent / found.group(1)).read_text())
    assert found.group(2).rstrip("\n").splitlines() == table(result)
