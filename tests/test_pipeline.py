"""The Pipeline: one schema for pipeline.json and an index's config, validated at the boundary,
and folders written by vecdoctor 0.1.0 that still load and give the same hits."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest

from vecdoctor.config import Precision, RerankFusion, SearchMode, TransformKind
from vecdoctor.errors import IncompatibleError, InputError
from vecdoctor.pipeline import FORMAT_VERSION, Pipeline

V010 = Path(__file__).parent / "fixtures" / "v0_1_0"
EXPECTED = json.loads((V010 / "expected.json").read_text())
QUERIES = json.loads((V010 / "queries.json").read_text())


def _top10(index, mode=None) -> list[list[str]]:
    from vecdoctor.search.searcher import Searcher

    searcher = Searcher(index, cache_size=0)
    return [[h.id for h in hits] for hits in searcher.search_batch(QUERIES, 10, mode)]


# -- folders and files written by 0.1.0 ---------------------------------------------------------
@pytest.mark.parametrize("name", ["index", "index-float32"])
def test_v010_index_loads_and_returns_the_same_hits(name):
    from vecdoctor.index.store import Index

    index = Index.load(V010 / name)
    for mode in ("bm25", "dense", "hybrid"):
        assert _top10(index, mode) == EXPECTED[name][mode], mode
    assert _top10(index) == EXPECTED[name]["default"]


def test_v010_index_pipeline_is_read_from_the_flat_keys():
    from vecdoctor.index.store import Index

    hybrid = Index.load(V010 / "index").pipeline
    assert hybrid.storage is Precision.INT8
    assert hybrid.transform is TransformKind.ABTT
    assert hybrid.transform_dir == V010 / "index" / "transform"
    assert hybrid.max_length == 64 and hybrid.mode is SearchMode.HYBRID
    dense = Index.load(V010 / "index-float32").pipeline
    assert (dense.mode, str(dense.fusion), dense.rrf_k) == (SearchMode.DENSE, "weighted", 30)
    assert dense.storage is Precision.FLOAT32 and dense.transform is None


def test_v010_pipeline_json_loads_and_builds_the_same_index():
    from vecdoctor.data import load_corpus
    from vecdoctor.index.store import Index

    pipeline = Pipeline.load(V010 / "pipeline" / "pipeline.json")
    assert pipeline.storage is Precision.INT8  # 0.1.0 called it "precision"
    assert pipeline.transform is TransformKind.ABTT
    assert pipeline.transform_dir == V010 / "pipeline" / "transform"
    assert pipeline.evidence["retrieval:hybrid"].startswith("hybrid nDCG@10")
    # the fixture index was built from this file with the model's max length set to 64
    index = Index.from_pipeline(load_corpus(V010 / "corpus.jsonl"), pipeline.replace(max_length=64))
    for mode in ("bm25", "dense", "hybrid"):
        assert _top10(index, mode) == EXPECTED["index"][mode], mode


def test_saved_index_has_the_header_and_reloads_the_same_pipeline(tmp_path):
    from vecdoctor.index.store import Index

    old = Index.load(V010 / "index")
    old.save(tmp_path / "idx")
    meta = json.loads((tmp_path / "idx" / "config.json").read_text())
    assert {k: meta[k] for k in ("class", "format_version")} == {"class": "Index", "format_version": 2}
    assert meta["vecdoctor_version"]
    assert meta["pipeline"]["storage"] == "int8" and meta["pipeline"]["transform_dir"] == "transform"
    for gone in ("precision", "search", "oversample", "ann"):  # one place for each setting
        assert gone not in meta
    new = Index.load(tmp_path / "idx")
    assert dataclasses.replace(new.pipeline, transform_dir=None) == dataclasses.replace(
        old.pipeline, transform_dir=None
    )
    assert _top10(new) == EXPECTED["index"]["default"]


# -- the schema ---------------------------------------------------------------------------------
def test_round_trip_through_a_file(tmp_path):
    shutil.copytree(V010 / "pipeline" / "transform", tmp_path / "transform")
    p = Pipeline(model="minilm", pooling="cls", window="256:128:mean", transform="whitening",
                 transform_dir=tmp_path / "transform", storage="binary", mode="dense",
                 fusion="weighted", rrf_k=10, rerank="maxsim", rerank_fusion="none",
                 evidence={"x": "y"})
    p.save(tmp_path / "pipeline.json")
    raw = json.loads((tmp_path / "pipeline.json").read_text())
    assert raw["class"] == "Pipeline" and raw["format_version"] == FORMAT_VERSION
    assert raw["transform_dir"] == "transform" and raw["window"] == "256:128:mean"
    back = Pipeline.load(tmp_path / "pipeline.json")
    assert back == p and back.evidence == {"x": "y"}
    assert back.rerank_fusion is RerankFusion.NONE


def _write(tmp_path: Path, **changes) -> Path:
    spec = Pipeline().to_dict()
    spec.update(changes)
    path = tmp_path / "pipeline.json"
    path.write_text(json.dumps(spec))
    return path


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rrf_k": math.nan}, "rrf_k must be a finite number"),
        ({"rrf_k": -1}, "rrf_k must be >= 0"),
        ({"oversample": 0.5}, "oversample must be >= 1"),
        ({"max_length": 12.5}, "max_length must be a whole number"),
        ({"mode": "fuzzy"}, "valid values: bm25, dense, hybrid"),
        ({"storage": "int4"}, "valid values: float32, int8, binary"),
        ({"pooling": 3}, "unknown pooling"),
        ({"model": ""}, "names no model"),
        ({"colour": "red"}, "unknown pipeline keys ['colour']"),
        ({"class": "Index"}, "not a Pipeline"),
        ({"window": "8:64"}, "stride"),
        ({"ann": "hnsw", "storage": "int8"}, "searches float32 vectors"),
        ({"transform_dir": "../elsewhere"}, "leaves the pipeline's folder"),
        ({"transform_dir": "/etc"}, "leaves the pipeline's folder"),
        ({"transform_dir": "missing"}, "not found"),
        ({"transform": "whitening"}, "no fitted transform folder"),
    ],
)
def test_bad_pipelines_are_clear_errors(tmp_path, changes, message):
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Pipeline.load(_write(tmp_path, **changes))


def test_nan_in_json_text_is_refused(tmp_path):
    path = tmp_path / "pipeline.json"
    path.write_text(json.dumps(Pipeline().to_dict()).replace('"rrf_k": 60', '"rrf_k": NaN'))
    with pytest.raises(InputError, match="rrf_k"):
        Pipeline.load(path)


def test_newer_format_asks_for_an_upgrade(tmp_path):
    with pytest.raises(IncompatibleError, match="upgrade vecdoctor"):
        Pipeline.load(_write(tmp_path, format_version=FORMAT_VERSION + 1))


def test_symlinked_transform_folder_is_refused(tmp_path):
    shutil.copytree(V010 / "pipeline" / "transform", tmp_path / "real")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    with pytest.raises(InputError, match="symbolic link"):
        Pipeline.load(_write(tmp_path, transform_dir="sub/link"))


def test_transform_outside_the_folder_cannot_be_saved(tmp_path):
    p = Pipeline(transform="abtt", transform_dir=V010 / "pipeline" / "transform")
    with pytest.raises(InputError, match="not inside"):
        p.save(tmp_path / "pipeline.json")


def test_index_config_with_a_bad_pipeline_is_a_clear_error(tmp_path):
    from vecdoctor.index.store import Index

    shutil.copytree(V010 / "index-float32", tmp_path / "idx")
    Index.load(tmp_path / "idx").save(tmp_path / "idx")
    meta = json.loads((tmp_path / "idx" / "config.json").read_text())
    meta["pipeline"]["rrf_k"] = "sixty"
    (tmp_path / "idx" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="rrf_k"):
        Index.load(tmp_path / "idx")


# -- one header on every saved folder -------------------------------------------------------------
def test_every_file_of_a_saved_index_starts_with_the_header(tmp_path):
    from vecdoctor import __version__
    from vecdoctor.index.store import Index

    Index.load(V010 / "index").save(tmp_path / "idx")
    for rel, kind in [("config.json", "Index"), ("bm25/config.json", "BM25Index"),
                      ("transform/config.json", "AllButTheTop"),
                      ("quantizer/config.json", "ScalarQuantizer")]:
        meta = json.loads((tmp_path / "idx" / rel).read_text())
        assert meta["class"] == kind, rel
        assert isinstance(meta["format_version"], int) and meta["vecdoctor_version"] == __version__


@pytest.mark.parametrize("rel", ["config.json", "bm25/config.json", "transform/config.json"])
def test_a_newer_format_anywhere_in_an_index_asks_for_an_upgrade(tmp_path, rel):
    from vecdoctor.index.store import Index

    Index.load(V010 / "index").save(tmp_path / "idx")
    path = tmp_path / "idx" / rel
    meta = json.loads(path.read_text())
    meta["format_version"] = 99
    path.write_text(json.dumps(meta))
    with pytest.raises(IncompatibleError, match="upgrade vecdoctor"):
        Index.load(tmp_path / "idx")
