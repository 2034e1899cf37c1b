"""Every other kind of folder vecdoctor reads, damaged in many ways: a converted model, a
sentence-transformers model folder (what `finetune` writes), a cross-encoder reranker and a
LanceDB table's pipeline metadata. Loading and using each gives a result or a clear
VecdoctorError, never another exception, a hang or a file read from outside the folder.
(Index, transform, quantizer and pipeline folders: tests/test_security.py.)"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
import crash_worker as cw  # noqa: E402
from folder_damage import damage, damage_json  # noqa: E402
from test_rerank import cross_encoder_dir  # noqa: E402, F401 - the fixture is used by name

from vecdoctor.data import Document  # noqa: E402
from vecdoctor.errors import InputError, VecdoctorError  # noqa: E402

SLOW = settings(max_examples=25, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
DOCS = [Document("a", "Insulin resistance and type 2 diabetes."),
        Document("b", "A survey of bridge engineering.")]


def _fresh(pristine: Path, factory) -> Path:  # type: ignore[no-untyped-def]
    folder = factory.mktemp("damaged") / pristine.name
    shutil.copytree(pristine, folder)
    return folder


# -- converted model (vecdoctor export) ----------------------------------------------------------
@pytest.fixture(scope="module")
def converted(home) -> Path:
    pytest.importorskip("onnxruntime")
    from vecdoctor.encode.convert.export import ensure_converted
    from vecdoctor.models import resolve

    return ensure_converted(resolve("minilm"), "onnx", "fp32").path


def _encode(folder: Path) -> None:
    from vecdoctor.encode.encoder import Encoder

    vectors = Encoder(str(folder)).encode(["protein folding in the cell"])
    assert vectors.shape == (1, 384)


def test_the_pristine_converted_model_loads(converted):
    _encode(converted)


def test_a_converted_graph_name_outside_the_folder_is_refused(converted, tmp_path):
    from vecdoctor.encode.convert.cache import load_converted
    from vecdoctor.errors import IncompatibleError

    folder = tmp_path / "variant"
    shutil.copytree(converted, folder)
    manifest = json.loads((folder / "vecdoctor_export.json").read_text())
    manifest["graph"] = "../elsewhere/model.onnx"
    (folder / "vecdoctor_export.json").write_text(json.dumps(manifest))
    with pytest.raises(IncompatibleError, match="not among its files"):
        load_converted(folder)


def test_a_deeply_nested_manifest_is_a_clear_error(converted, tmp_path):
    folder = tmp_path / "variant"
    shutil.copytree(converted, folder)
    (folder / "vecdoctor_export.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(InputError, match="nested too deeply"):
        _encode(folder)


# -- a sentence-transformers model folder (what finetune writes; any local model) -------------
@pytest.fixture(scope="module")
def model_folder(minilm_path, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("model") / "minilm"
    shutil.copytree(minilm_path, folder, ignore=shutil.ignore_patterns("*.onnx", "onnx", "openvino"))
    return folder


@pytest.mark.parametrize("kind,described_by", [("converted", "vecdoctor_export.json"),
                                                ("model_folder", "config.json")])
@SLOW
@given(data=st.data())
def test_damaged_model_folders_fail_only_with_clear_errors(request, tmp_path_factory, kind,
                                                           described_by, data):
    """A converted graph (every file hashed in its description) and a plain model folder."""
    folder = _fresh(request.getfixturevalue(kind), tmp_path_factory)
    damage(folder, data, prefer=described_by)
    with contextlib.suppress(VecdoctorError):
        _encode(folder)


@pytest.mark.parametrize("key,size", [("num_hidden_layers", 100_000), ("vocab_size", 10**9),
                                      ("hidden_size", 1 << 20)])
def test_a_config_describing_a_huge_network_is_refused_before_it_is_built(model_folder, tmp_path,
                                                                          key, size):
    folder = tmp_path / "m"
    shutil.copytree(model_folder, folder)
    config = json.loads((folder / "config.json").read_text())
    config[key] = size
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="does not belong to these weights|not a multiple"):
        _encode(folder)


# -- a cross-encoder reranker ------------------------------------------------------------------
def _rerank(folder: Path) -> None:
    from vecdoctor.rerank.rerankers import CrossEncoderReranker

    scores = CrossEncoderReranker(folder).score("insulin", DOCS)
    assert scores.shape == (2,)


@SLOW
@given(st.data())
def test_damaged_reranker_folders_fail_only_with_clear_errors(cross_encoder_dir,  # noqa: F811
                                                              tmp_path_factory, data):
    folder = _fresh(cross_encoder_dir, tmp_path_factory)
    damage(folder, data, prefer="config.json")
    with contextlib.suppress(VecdoctorError):
        _rerank(folder)


# -- a LanceDB table's pipeline metadata and transform companion -------------------------------
@pytest.fixture(scope="module")
def lance_db(tmp_path_factory) -> Path:
    pytest.importorskip("lancedb")
    from vecdoctor.fix.transform import Whitening
    from vecdoctor.index.lance import LanceIndex

    docs = [d for g in range(4) for d in cw.gen_docs(g)]
    enc = cw.HashEncoder()
    whitening = Whitening().fit(enc.encode_documents([d.content for d in docs]) + 0.01)
    whitening.fingerprint_ = enc.fingerprint
    uri = tmp_path_factory.mktemp("lance") / "db"
    LanceIndex.build(docs, uri, enc, transform=whitening)
    return uri


def _search_lance(uri: Path) -> None:
    from vecdoctor.index.lance import LanceIndex
    from vecdoctor.search.searcher import Searcher

    index = LanceIndex.load(uri)
    index.use_encoder(cw.HashEncoder())
    Searcher(index).search("protein cell", k=3, mode="dense")


def test_the_pristine_lance_table_loads(lance_db):
    _search_lance(lance_db)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.data())
def test_damaged_lance_metadata_fails_only_with_clear_errors(lance_db, tmp_path_factory, data):
    import lancedb

    from vecdoctor.index.rows import PIPELINE_KEY

    uri = _fresh(lance_db, tmp_path_factory)
    table = lancedb.connect(str(uri)).open_table("documents").to_lance()
    meta = damage_json(json.loads(table.schema.metadata[PIPELINE_KEY]), data)
    raw = data.draw(st.sampled_from([json.dumps(meta), json.dumps(meta)[:-3], "[" * 50_000]),
                    label="raw")
    table.replace_schema_metadata({PIPELINE_KEY.decode(): raw})
    with contextlib.suppress(VecdoctorError):
        _search_lance(uri)


@pytest.mark.parametrize("name", ["../escape.npy", "", "sub/mean.npy"])
def test_a_transform_companion_with_bad_file_names_is_refused(lance_db, tmp_path, name):
    import lancedb
    import pyarrow as pa

    uri = tmp_path / "db"
    shutil.copytree(lance_db, uri)
    db = lancedb.connect(str(uri))
    companion = db.open_table("documents__transform").to_arrow()
    files = companion.column("file").to_pylist()
    files[0] = name
    db.create_table("documents__transform", data=pa.table({"file": files, "data": companion.column("data")}),
                    mode="overwrite")
    with pytest.raises(InputError, match="bad file name"):
        _search_lance(uri)
