"""`evaluate` over the LanceDB backend and over saved indexes, on a real SciFact sample.

One evaluation of bm25, dense, hybrid and int8 on both stores is shared by the module; the
saved indexes below are built with the same encoder and its cache, so nothing is encoded
twice. Skipped without the ``scale`` extra.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import retrieval_support as rs
from typer.testing import CliRunner

from vecdoctor.cli import app
from vecdoctor.errors import InputError

pytestmark = [
    pytest.mark.filterwarnings("ignore:lance is not fork-safe:UserWarning"),
]

MAX_LENGTH = 128  # shorter inputs keep encoding fast; the code paths are the same
VARIANTS = ["bm25", "dense", "hybrid", "int8"]
MODES = ("bm25", "dense", "hybrid")


@pytest.fixture(scope="module")
def small(beir_dir):
    pytest.importorskip("lancedb")
    from vecdoctor.data import load_dataset
    from vecdoctor.evaluate.metrics import sample_dataset

    return sample_dataset(load_dataset(beir_dir), max_queries=12, max_docs=80, seed=0)


@pytest.fixture(scope="module")
def cache():
    from vecdoctor.encode.cache import VectorCache

    return VectorCache(max_size=10_000)


@pytest.fixture(scope="module")
def encoder(cache):
    from vecdoctor.encode.encoder import Encoder

    return Encoder("minilm", max_length=MAX_LENGTH, cache=cache)


@pytest.fixture(scope="module")
def report(small, cache):
    from vecdoctor.evaluate.variants import evaluate_variants

    return evaluate_variants(small, "minilm", VARIANTS, store="folder,lancedb",
                             encoder_options={"max_length": MAX_LENGTH}, cache=cache)


def _top10(run: dict[str, float]) -> list[str]:
    return sorted(run, key=lambda d: -run[d])[:10]


def test_rows_per_store_and_skipped_pairs(report) -> None:
    names = [r["variant"] for r in report.table()]
    assert names == ["bm25@dir", "bm25@lancedb", "dense@dir", "dense@lancedb", "hybrid@dir",
                     "hybrid@lancedb", "int8@dir"]
    assert report.skipped == [{"variant": "int8", "store": "lancedb",
                               "reason": "LanceDB stores float32 vectors; int8/binary need the "
                                         "index folder"}]
    lance = report.get("dense@lancedb")
    assert lance.store == "lancedb" and lance.index is None  # a temporary database, removed
    assert lance.baseline == "bm25@lancedb" and report.get("hybrid@lancedb").baseline == "dense@lancedb"
    assert lance.bytes_per_doc == report.get("dense@dir").bytes_per_doc == 4 * 384


def test_lancedb_dense_equals_the_folder_dense(report) -> None:
    # Exact search over the same float32 vectors: LanceDB's scores differ from numpy's by float
    # rounding only (~1e-7), and no two of this sample's top-10 scores are that close, so the
    # rankings, and with them every per-query nDCG@10, are identical (no tie tolerance needed).
    folder, lance = report.get("dense@dir"), report.get("dense@lancedb")
    for qid, run in folder.run.items():
        assert _top10(lance.run[qid]) == _top10(run)
        ids = _top10(run)
        np.testing.assert_allclose([lance.run[qid][d] for d in ids], [run[d] for d in ids], atol=1e-5)
    assert lance.evaluation.per_query["ndcg@10"] == folder.evaluation.per_query["ndcg@10"]
    assert lance.ndcg == folder.ndcg > 0.5


def test_lancedb_bm25_is_its_own_scorer_and_is_reported(report) -> None:
    # LanceDB's full-text search scores title and text as two fields: close to bm25s, not equal
    folder, lance = report.get("bm25@dir"), report.get("bm25@lancedb")
    assert lance.ndcg > 0.5 and abs(lance.ndcg - folder.ndcg) < 0.1
    assert "LanceDB full-text search" in lance.description
    assert report.get("hybrid@lancedb").ndcg > 0.5


def test_a_variant_no_store_can_run_is_an_error(small) -> None:
    from vecdoctor.evaluate.variants import evaluate_variants

    with pytest.raises(InputError, match=r"'int8', 'binary' cannot run on store lancedb .*"
                                         r"variants that can: bm25, dense, "):
        evaluate_variants(small, "minilm", ["dense", "int8", "binary"], store="lancedb")
    with pytest.raises(InputError, match="unknown store 'mongo'; valid values: dir, lancedb"):
        evaluate_variants(small, "minilm", ["dense"], store="dir,mongo")
    with pytest.raises(InputError, match="is for store lancedb"):
        evaluate_variants(small, "minilm", ["dense"], store="dir", uri="/tmp/somewhere")


def test_tables_kept_in_a_database_and_never_overwritten(report, small, cache, encoder,
                                                          tmp_path: Path) -> None:
    from vecdoctor.evaluate.saved import evaluate_index
    from vecdoctor.evaluate.variants import evaluate_variants
    from vecdoctor.index.lance import LanceIndex

    kept = evaluate_variants(small, "minilm", ["dense"], store="lancedb", uri=tmp_path / "db",
                             encoder_options={"max_length": MAX_LENGTH}, cache=cache)
    assert kept.get("dense").index == f"{tmp_path / 'db'} (table dense)"
    again = evaluate_index(LanceIndex.load(tmp_path / "db", "dense"), small, ["dense"])
    assert again.get("dense").evaluation.per_query == report.get("dense@lancedb").evaluation.per_query
    LanceIndex.build(small.corpus[:5], tmp_path / "other", encoder, table="dense")
    with pytest.raises(InputError, match=r"table\(s\) 'dense' already exist"):
        evaluate_variants(small, "minilm", ["dense"], store="lancedb", uri=tmp_path / "other")
    assert len(LanceIndex.load(tmp_path / "other", "dense")) == 5


@pytest.fixture(scope="module")
def saved(small, encoder, tmp_path_factory) -> dict[str, Path]:
    """The sample indexed by the same pipeline in an index folder and in a LanceDB database."""
    from vecdoctor.index.lance import LanceIndex
    from vecdoctor.index.store import Index

    root = tmp_path_factory.mktemp("saved")
    Index.build(small.corpus, encoder).save(root / "idx")
    LanceIndex.build(small.corpus, root / "db", encoder)
    return {"dir": root / "idx", "lancedb": root / "db"}


@pytest.mark.parametrize("store", ["dir", "lancedb"])
def test_evaluate_index_reproduces_the_variants(report, small, saved, store) -> None:
    from vecdoctor.cli.retrieval import open_index
    from vecdoctor.evaluate.saved import evaluate_index

    again = evaluate_index(open_index(saved[store]), small, MODES)
    assert [r.name for r in again.results] == list(MODES)
    assert again.coverage == {"judged_documents": len({d for r in small.qrels.values() for d in r}),
                              "missing_from_index": 0, "queries_without_judged_documents": 0}
    for r in again.results:
        built = report.get(f"{r.name}@{store}")
        assert r.store == store and r.index is not None
        assert r.evaluation.per_query == built.evaluation.per_query, r.name
    assert again.get("hybrid").baseline == "dense" and again.get("dense").baseline == "bm25"


def test_cli_evaluate_index_writes_the_same_table(report, small, saved, tmp_path: Path) -> None:
    data = rs.write_beir(small, tmp_path / "data")
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["evaluate", str(data), "--index", str(saved["lancedb"]),
                                      "--modes", "dense,bm25", "-o", str(out)])
    assert result.exit_code == 0, result.output
    table = {r["variant"]: r for r in json.loads(result.stdout)["variants"]}
    assert list(table) == ["dense", "bm25"] and table["dense"]["store"] == "lancedb"
    for mode in table:
        assert table[mode]["ndcg@10"] == round(report.get(f"{mode}@lancedb").ndcg, 4)
    assert {p.name for p in (out / "runs").iterdir()} == {"dense.trec", "bm25.trec"}
    assert json.loads((out / "results.json").read_text())["coverage"]["missing_from_index"] == 0


def test_judged_documents_missing_from_the_index_count_as_not_found(small, encoder) -> None:
    from vecdoctor.evaluate.saved import evaluate_index
    from vecdoctor.index.store import Index

    judged = sorted({d for rels in small.qrels.values() for d in rels})
    dropped = set(judged[:4])
    part = Index.build([d for d in small.corpus if d.id not in dropped], encoder)
    result = evaluate_index(part, small, ["dense"])
    lost = sum(1 for rels in small.qrels.values() if set(rels) <= dropped)
    assert result.coverage == {"judged_documents": len(judged), "missing_from_index": 4,
                               "queries_without_judged_documents": lost}
    assert result.num_queries == len(small.qrels)  # every judged query still counts
    assert lost >= 1 and sum(v == 0 for v in result.results[0].evaluation.per_query["ndcg@10"].values()) >= lost
    other = Index.build([d for d in small.corpus if d.id not in set(judged)][:10], encoder)
    with pytest.raises(InputError, match="holds none of the .* documents judged"):
        evaluate_index(other, small)


def test_cli_evaluate_bad_input(small, saved, tmp_path: Path) -> None:
    data = rs.write_beir(small, tmp_path / "data")
    other = rs.other_model_dir(str(tmp_path / "models"))
    cases = [
        (["--store", "mongo"], "unknown store 'mongo'; valid values: dir, lancedb"),
        (["--store", "lancedb", "--variants", "dense,binary"], "'binary' cannot run on store lancedb"),
        (["--index", str(tmp_path / "none")], "no such index folder"),
        (["--index", str(saved["lancedb"]), "-m", str(other)], "built with model 'minilm'"),
        (["--index", str(saved["dir"]), "--variants", "dense"], "drop --variants"),
        (["--index", str(saved["dir"]), "--modes", "sparse"], "unknown searchmode 'sparse'"),
        (["--modes", "dense"], "--modes and --table are for --index"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(app, ["evaluate", str(data), "-o", str(tmp_path / "out"), *args])
        assert result.exit_code == 1 and message in result.output, (args, result.output)
        assert "Traceback" not in result.output
        assert not (tmp_path / "out").exists()


def test_cli_evaluate_on_both_stores(small, tmp_path: Path) -> None:
    from vecdoctor.data import Dataset

    qids = sorted(small.qrels)[:5]
    judged = {d for q in qids for d in small.qrels[q]}
    docs = [d for d in small.corpus if d.id in judged]
    docs += [d for d in small.corpus if d.id not in judged][: 30 - len(docs)]
    tiny = Dataset(corpus=docs, queries={q: small.queries[q] for q in qids},
                   qrels={q: small.qrels[q] for q in qids}, name="tiny")
    data = rs.write_beir(tiny, tmp_path / "data")
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["evaluate", str(data), "--store", "dir,lancedb",
                                      "--variants", "dense", "-o", str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["variants"]
    assert [r["variant"] for r in rows] == ["dense@dir", "dense@lancedb"]
    assert rows[0]["ndcg@10"] == rows[1]["ndcg@10"]
    assert {p.name for p in (out / "runs").iterdir()} == {"dense@dir.trec", "dense@lancedb.trec"}
