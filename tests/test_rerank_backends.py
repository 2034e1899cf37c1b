"""The cross-encoder reranker exported to ONNX Runtime and OpenVINO: scores match PyTorch."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from test_rerank import PAIRS, cross_encoder_dir  # noqa: F401 - the fixture is used by name

from vecdoctor.data import Document
from vecdoctor.encode.convert.cache import EXPORT_FILE
from vecdoctor.errors import InputError, MissingExtraError
from vecdoctor.rerank.backends import (
    export_cross_encoder,
    max_length_of,
    reranker_variant_dir,
)
from vecdoctor.rerank.rerankers import CrossEncoderReranker

QUERY = "vitamin d and bone density"
DOCS = [Document(str(i), d) for i, (_, d, _) in enumerate(PAIRS)] + [
    Document("long", "Bone mineral density was measured in 300 adults. " * 30)
]


@pytest.fixture(scope="module")
def reference(cross_encoder_dir):  # noqa: F811
    return CrossEncoderReranker(cross_encoder_dir).score(QUERY, DOCS)


def test_fast_backend_options_are_checked(cross_encoder_dir):  # noqa: F811
    with pytest.raises(InputError, match="valid backends: torch, onnx, openvino"):
        CrossEncoderReranker(cross_encoder_dir, backend="tensorrt")
    with pytest.raises(InputError, match="int8 runs on backend 'onnx' or 'openvino'"):
        CrossEncoderReranker(cross_encoder_dir, precision="int8")
    with pytest.raises(InputError, match="valid values"):
        CrossEncoderReranker(cross_encoder_dir, backend="onnx", precision="fp8")


@pytest.mark.parametrize(
    "module,backend,precision",
    [("onnxruntime", "onnx", "fp32"), ("onnxscript", "onnx", "int8"),
     ("openvino", "openvino", "fp32"), ("nncf", "openvino", "int8")],
)
def test_missing_package_names_the_extra(
    module, backend, precision, cross_encoder_dir, home, monkeypatch  # noqa: F811
):
    variant = reranker_variant_dir(cross_encoder_dir, backend, precision)
    existed = variant.exists()
    monkeypatch.setitem(sys.modules, module, None)  # import of it now raises ImportError
    with pytest.raises(MissingExtraError, match=rf"{module} is not installed.*vecdoctor\[fast\]"):
        CrossEncoderReranker(cross_encoder_dir, backend=backend, precision=precision)
    assert variant.exists() == existed


def test_max_length_is_the_models_own(cross_encoder_dir):  # noqa: F811
    assert max_length_of(cross_encoder_dir) == 64


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_fp32_graph_scores_match_pytorch(backend, cross_encoder_dir, reference, home):  # noqa: F811
    reranker = CrossEncoderReranker(cross_encoder_dir, backend=backend, batch_size=3)
    got = reranker.score(QUERY, DOCS)
    assert got.dtype == np.float32 and got.shape == reference.shape
    np.testing.assert_allclose(got, reference, atol=1e-3)
    assert list(np.argsort(-got)) == list(np.argsort(-reference))
    info = reranker.converted.info
    assert info["kind"] == "cross-encoder" and info["check"]["max_abs_logit_difference"] < 1e-3
    assert reranker.converted.path == reranker_variant_dir(cross_encoder_dir, backend, "fp32")
    assert str(reranker.converted.path).startswith(str(home))
    assert reranker.score(QUERY, []).shape == (0,)
    # a second reranker reuses the cached graph
    stamp = (reranker.converted.path / EXPORT_FILE).stat().st_mtime_ns
    again = CrossEncoderReranker(cross_encoder_dir, backend=backend)
    assert (again.converted.path / EXPORT_FILE).stat().st_mtime_ns == stamp
    np.testing.assert_allclose(again.score(QUERY, DOCS), got, atol=1e-6)


@pytest.mark.slow
def test_int8_graph_is_close_and_reports_its_error(cross_encoder_dir, reference, home):  # noqa: F811
    reranker = CrossEncoderReranker(cross_encoder_dir, backend="onnx", precision="int8")
    got = reranker.score(QUERY, DOCS)
    check = reranker.converted.info["check"]
    assert 0 < check["max_abs_logit_difference"] < 1.0 and "same_order" in check
    assert np.abs(got - reference).max() < 0.1
    # each positive still scores above its negative
    for i in range(0, len(PAIRS), 2):
        pair = reranker.score(PAIRS[i][0], [Document("p", PAIRS[i][1]), Document("n", PAIRS[i + 1][1])])
        assert pair[0] > pair[1]
    weights = (cross_encoder_dir / "model.safetensors").stat().st_size
    assert reranker.converted.graph_path.stat().st_size < 0.75 * weights  # embeddings stay fp32


@pytest.mark.slow
def test_damaged_graph_is_converted_again(cross_encoder_dir, reference, home, caplog):  # noqa: F811
    first = export_cross_encoder(cross_encoder_dir, "onnx", output=reranker_variant_dir(
        cross_encoder_dir, "onnx", "fp32"), force=True)  # an earlier test may have converted it
    first.graph_path.write_bytes(first.graph_path.read_bytes()[:1000])
    with caplog.at_level("WARNING"):
        reranker = CrossEncoderReranker(cross_encoder_dir, backend="onnx")
    assert "converting again" in caplog.text
    np.testing.assert_allclose(reranker.score(QUERY, DOCS), reference, atol=1e-3)
    info = json.loads((reranker.converted.path / EXPORT_FILE).read_text())
    assert info["files"]["model.onnx"]["size"] > 1000
