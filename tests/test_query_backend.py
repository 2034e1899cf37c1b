"""Queries of an fp32 index encoded on a converted backend: same vectors, same hits."""

from __future__ import annotations

import numpy as np
import pytest
from retrieval_support import MAX_LENGTH, subset

from vecdoctor.encode.encoder import Encoder
from vecdoctor.encode.identity import same_vectors
from vecdoctor.errors import IncompatibleError, InputError
from vecdoctor.index import Index
from vecdoctor.search.searcher import Searcher

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def saved(home, tmp_path_factory):
    from vecdoctor.fix.transform import AllButTheTop

    docs, queries, _ = subset()
    enc = Encoder("minilm", max_length=MAX_LENGTH)
    vectors = enc.encode_documents([d.content for d in docs[:60]])
    abtt = AllButTheTop().fit(vectors, fingerprint=enc.fingerprint, model_id=enc.model_id)
    folder = tmp_path_factory.mktemp("idx") / "index"
    Index.build(docs[:60], enc, transform=abtt).save(folder)
    return folder, list(queries.values())[:12]


def test_onnx_queries_give_the_torch_hits(saved):
    folder, queries = saved
    torch_hits = Searcher(Index.load(folder), cache_size=0).search_batch(queries, k=10, mode="dense")
    fast = Searcher(Index.load(folder), cache_size=0, query_backend="onnx")
    onnx_hits = fast.search_batch(queries, k=10, mode="dense")
    assert fast.index.encoder.backend_name == "onnx"
    assert [[h.id for h in hits] for hits in onnx_hits] == [[h.id for h in hits] for hits in torch_hits]
    np.testing.assert_allclose(
        [h.score for hits in onnx_hits for h in hits],
        [h.score for hits in torch_hits for h in hits],
        atol=1e-4,
    )
    # the fitted transform (all-but-the-top) is applied to the converted backend's vectors too
    assert fast.index.transform is not None


def test_only_backend_may_differ_and_only_in_fp32():
    base = {"model": "minilm", "backend": "torch", "precision": "fp32", "pooling": "mean"}
    assert same_vectors(base, {**base, "backend": "onnx"})
    assert not same_vectors(base, {**base, "backend": "onnx", "pooling": "cls"})
    assert not same_vectors({**base, "precision": "int8"}, {**base, "backend": "onnx", "precision": "int8"})


def test_a_quantized_index_refuses_another_query_backend(saved):
    folder, _ = saved
    index = Index.load(folder)
    index.embedder.encoder_config = {**index.encoder_config, "backend": "onnx", "precision": "int8"}
    with pytest.raises(IncompatibleError, match="int8"):
        Searcher(index, query_backend="torch")


def test_unknown_query_backend_lists_the_valid_ones(saved):
    folder, _ = saved
    with pytest.raises(InputError, match="torch, onnx, openvino"):
        Searcher(Index.load(folder), query_backend="tensorrt")


def test_search_command_takes_a_query_backend(saved):
    import json

    from typer.testing import CliRunner

    from vecdoctor.cli import app

    folder, queries = saved
    args = ["search", str(folder), queries[0], "-k", "3", "--mode", "dense"]
    plain = CliRunner().invoke(app, args)
    fast = CliRunner().invoke(app, [*args, "--query-backend", "onnx"])
    assert plain.exit_code == 0 and fast.exit_code == 0, fast.output
    ids = [h["id"] for h in json.loads(plain.stdout)["hits"]]
    assert len(ids) == 3 and ids == [h["id"] for h in json.loads(fast.stdout)["hits"]]


def test_search_command_keeps_blas_to_one_thread():
    """`vecdoctor search`/`serve` limit NumPy's BLAS threads (they compete with the model's)."""
    from threadpoolctl import threadpool_info

    from vecdoctor.search.searcher import limit_blas_threads

    limit_blas_threads(1)
    blas = [i for i in threadpool_info() if i["user_api"] == "blas"]
    assert blas and all(i["num_threads"] == 1 for i in blas)
