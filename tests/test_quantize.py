"""Quantizers on real MiniLM vectors of SciFact: accuracy, exact sizes, persistence."""

from __future__ import annotations

import numpy as np
import pytest

from vecdoctor.errors import IncompatibleError, InputError
from vecdoctor.fix.quantize import (
    BinaryQuantizer,
    ProductQuantizer,
    ScalarQuantizer,
    default_pq_m,
    hamming_scores,
    load_quantizer,
)


@pytest.fixture(scope="module")
def vectors(minilm, real_texts):
    """MiniLM vectors (unit length, 384-d) of 100 SciFact documents."""
    return minilm.encode_documents(real_texts[:100])


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_int8_reconstruction_cosine_above_099(vectors):
    q = ScalarQuantizer().fit(vectors)
    codes = q.encode(vectors)
    assert codes.dtype == np.int8 and codes.shape == vectors.shape
    assert cosines(q.decode(codes), vectors).min() > 0.99
    assert q.bytes_per_vector == 384 and q.compression == 4.0


def test_int8_per_dimension_range_maps_to_full_code_range():
    x = np.array([[-1.0, 0.0], [1.0, 2.0], [0.5, 1.5]], dtype=np.float32)
    q = ScalarQuantizer().fit(x)
    codes = q.encode(x)
    # 0.5 is 1.5 / (2 / 255) = 191.25 steps above the minimum: code -128 + 191 = 63
    assert codes[:, 0].tolist() == [-128, 127, 63]
    assert codes[:, 1].tolist() == [-128, 127, 63]
    # rounding error is at most half a step (range / 255 / 2)
    assert np.abs(q.decode(codes) - x).max() <= np.array([2.0, 2.0]).max() / 255 / 2 + 1e-6


def test_int8_global_scale_clips_at_the_percentile(vectors):
    q = ScalarQuantizer("global", percentile=95).fit(vectors)
    top = np.percentile(np.abs(vectors), 95)
    np.testing.assert_allclose(q.scale_, top / 127, rtol=1e-6)
    codes = q.encode(vectors).astype(int)
    assert codes.min() >= -128 and codes.max() <= 127
    assert (np.abs(codes) >= 127).mean() == pytest.approx((np.abs(vectors) >= top).mean(), abs=0.01)
    assert cosines(q.reconstruct(vectors), vectors).mean() > 0.9


def test_binary_codes_are_sign_bits(vectors):
    q = BinaryQuantizer().fit(vectors)
    codes = q.encode(vectors)
    assert codes.dtype == np.uint8 and codes.shape == (len(vectors), 48)
    bits = np.unpackbits(codes, axis=1)
    assert np.array_equal(bits.astype(bool), vectors > 0)
    assert q.bytes_per_vector == 48 and q.compression == 32.0
    assert 0.6 < cosines(q.decode(codes), vectors).mean() < 0.95


def test_hamming_scores_match_brute_force():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, size=(3, 5), dtype=np.uint8)
    b = rng.integers(0, 256, size=(7, 5), dtype=np.uint8)
    expected = -np.array([[int(np.unpackbits(x ^ y).sum()) for y in b] for x in a])
    assert np.array_equal(hamming_scores(a, b), expected)


def test_product_quantizer_sizes_and_accuracy(vectors):
    assert default_pq_m(384) == 48 and default_pq_m(768) == 96 and default_pq_m(10) == 1
    pq = ProductQuantizer(nbits=6).fit(vectors)  # 100 vectors: 64 centroids per codebook
    codes = pq.encode(vectors)
    assert codes.shape == (len(vectors), 36) and pq.bytes_per_vector == 36
    assert pq.compression == pytest.approx(384 * 4 / 36)
    assert pq.centroids_.shape == (48, 64, 8)
    cos = cosines(pq.decode(codes), vectors).mean()
    assert 0.8 < cos < 1.0
    pq4 = ProductQuantizer(m=96, nbits=4).fit(vectors)
    assert pq4.encode(vectors).shape == (len(vectors), 48)
    assert pq4.bytes_per_vector == 48 and pq4.compression == 32.0


@pytest.mark.parametrize(
    "make",
    [
        ScalarQuantizer,
        lambda: ScalarQuantizer("global"),
        BinaryQuantizer,
        lambda: ProductQuantizer(nbits=5),
    ],
)
def test_save_load_round_trip_is_exact(tmp_path, vectors, make):
    q = make().fit(vectors, fingerprint="fp1", model_id="minilm")
    q.save(tmp_path / "q")
    loaded = load_quantizer(tmp_path / "q")
    assert type(loaded) is type(q)
    assert np.array_equal(loaded.encode(vectors), q.encode(vectors))
    assert np.array_equal(loaded.reconstruct(vectors), q.reconstruct(vectors))
    with pytest.raises(IncompatibleError, match="fp1.*fp2"):
        load_quantizer(tmp_path / "q", fingerprint="fp2")


def test_quantizer_errors_are_clear(vectors):
    with pytest.raises(InputError, match="does not divide"):
        ProductQuantizer(m=5).fit(vectors)
    with pytest.raises(InputError, match="at least 256 training vectors"):
        ProductQuantizer(nbits=8).fit(vectors[:100])
    q = ScalarQuantizer().fit(vectors)
    with pytest.raises(IncompatibleError, match="384-d.*768-d"):
        q.encode(np.zeros((1, 768)))
    with pytest.raises(InputError, match=r"shape \(n, 384\)"):
        q.decode(np.zeros((2, 10), dtype=np.int8))
    with pytest.raises(InputError, match="not fitted"):
        BinaryQuantizer().encode(vectors)
    with pytest.raises(InputError, match="percentile"):
        ScalarQuantizer("global", percentile=0)
    with pytest.raises(InputError, match="per_dim, global"):
        ScalarQuantizer("int4")
