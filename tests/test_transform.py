"""Whitening and all-but-the-top: the maths, persistence and compatibility checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vecdoctor.errors import IncompatibleError, InputError
from vecdoctor.fix.transform import AllButTheTop, Whitening, load_transform


def correlated(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Gaussian vectors with a random full-rank covariance and a non-zero mean."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d)) / np.sqrt(d) + np.eye(d)
    return (rng.normal(size=(n, d)) @ mixing + rng.normal(size=d)).astype(np.float32)


def test_whitening_gives_identity_covariance():
    x = correlated(20_000, 32)
    white = Whitening(normalize=False).fit(x).transform(x)
    assert np.abs(white.mean(axis=0)).max() < 1e-3
    assert np.abs(np.cov(white.T) - np.eye(32)).max() < 1e-3


def test_whitening_with_reduction_keeps_top_components():
    x = correlated(5_000, 24, seed=1)
    w = Whitening(n_components=6, normalize=False).fit(x)
    y = w.transform(x)
    assert y.shape == (5_000, 6) and w.output_dim == 6
    assert np.abs(np.cov(y.T) - np.eye(6)).max() < 1e-3
    # the kept directions are those of the largest eigenvalues
    assert np.all(np.diff(w.eigenvalues_) <= 0)


def test_whitening_output_is_unit_length_by_default():
    x = correlated(500, 16)
    y = Whitening().fit(x).transform(x[:10])
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("cls", [Whitening, AllButTheTop])
def test_save_load_is_bit_identical(tmp_path, cls):
    x = correlated(800, 40, seed=2)
    fitted = cls().fit(x, fingerprint="abc123", model_id="toy")
    fitted.save(tmp_path / "t")
    config = json.loads((tmp_path / "t" / "config.json").read_text())
    assert config["class"] == cls.__name__ and config["dim"] == 40
    assert config["fingerprint"] == "abc123" and config["model_id"] == "toy"
    for loaded in (cls.load(tmp_path / "t"), load_transform(tmp_path / "t")):
        assert type(loaded) is cls
        assert np.array_equal(loaded.transform(x), fitted.transform(x))


def test_768d_whitening_refuses_384d_input(tmp_path):
    w = Whitening().fit(np.random.default_rng(0).normal(size=(1000, 768)))
    with pytest.raises(IncompatibleError, match=r"768-d.*384-d"):
        w.transform(np.zeros((2, 384)))
    w.save(tmp_path / "w")
    loaded = load_transform(tmp_path / "w")
    with pytest.raises(IncompatibleError, match=r"768-d.*config\.json.*384-d"):
        loaded.transform(np.zeros((2, 384)))
    with pytest.raises(IncompatibleError, match="384"):
        load_transform(tmp_path / "w", dim=384)


def test_fingerprint_mismatch_is_refused(tmp_path):
    x = correlated(300, 8)
    w = Whitening().fit(x, fingerprint="aaaa")
    with pytest.raises(IncompatibleError, match="aaaa.*bbbb"):
        w.transform(x, fingerprint="bbbb")
    w.save(tmp_path / "w")
    with pytest.raises(IncompatibleError, match="aaaa.*bbbb"):
        Whitening.load(tmp_path / "w", fingerprint="bbbb")
    assert Whitening.load(tmp_path / "w", fingerprint="aaaa").fingerprint_ == "aaaa"


def test_check_compatible_uses_encoder_dimension_and_fingerprint():
    class FakeEncoder:
        dimension = 8
        fingerprint = "other"

    w = Whitening().fit(correlated(100, 8), fingerprint="mine")
    with pytest.raises(IncompatibleError, match="mine.*other"):
        w.check_compatible(FakeEncoder())


def test_fewer_samples_than_dimensions_warns_and_regularises():
    x = correlated(20, 64)
    with pytest.warns(UserWarning, match="fewer samples than dimensions"):
        w = Whitening(normalize=False).fit(x)
    assert 0.0 < w.shrinkage_ <= 1.0
    y = w.transform(x)
    assert np.isfinite(y).all()
    # without shrinkage the null directions would be amplified by 1/sqrt(eps) = 1000
    assert np.abs(y).max() < 100


def test_bad_inputs_give_clear_errors():
    x = correlated(50, 8)
    bad = x.copy()
    bad[3, 5] = np.nan
    with pytest.raises(InputError, match=r"NaN.*row 3, column 5"):
        Whitening().fit(bad)
    with pytest.raises(InputError, match="identical"):
        Whitening().fit(np.ones((10, 8)))
    with pytest.raises(InputError, match="at least 2"):
        AllButTheTop().fit(x[:1])
    with pytest.raises(InputError, match="2-D"):
        Whitening().fit(x[0])
    with pytest.raises(TypeError):
        Whitening().fit([["a", "b"], ["c", "d"]])
    with pytest.raises(InputError, match="not fitted"):
        Whitening().transform(x)
    with pytest.raises(InputError, match="n_components"):
        Whitening(n_components=0)
    with pytest.raises(InputError, match="larger than the vector dimension"):
        Whitening(n_components=9).fit(x)


def test_all_but_the_top_removes_top_directions():
    x = correlated(3000, 50, seed=3)
    abtt = AllButTheTop(n_components=3, normalize=False).fit(x)
    y = abtt.transform(x)
    assert abtt.components_.shape == (3, 50)
    np.testing.assert_allclose(abtt.components_ @ abtt.components_.T, np.eye(3), atol=1e-5)
    assert np.abs(y @ abtt.components_.T).max() < 1e-4
    # the remaining variance is what the top directions did not explain
    centred = x - x.mean(axis=0)
    assert np.var(y, axis=0).sum() < np.var(centred, axis=0).sum()
    top = np.linalg.svd(centred, full_matrices=False)[2][:3]
    np.testing.assert_allclose(np.abs(top @ abtt.components_.T), np.eye(3), atol=1e-3)


def test_all_but_the_top_default_removes_about_d_over_100():
    x = np.random.default_rng(0).normal(size=(600, 384))
    assert AllButTheTop().fit(x).n_components_ == 4
    assert AllButTheTop().fit(x[:, :50]).n_components_ == 1


def test_load_rejects_broken_folders(tmp_path):
    x = correlated(100, 8)
    Whitening().fit(x).save(tmp_path / "w")
    (tmp_path / "w" / "W.npy").unlink()
    with pytest.raises(InputError, match=r"W\.npy.*not found"):
        load_transform(tmp_path / "w")
    AllButTheTop().fit(x).save(tmp_path / "a")
    with pytest.raises(IncompatibleError, match="AllButTheTop"):
        Whitening.load(tmp_path / "a")
    with pytest.raises(InputError, match="no such folder"):
        load_transform(tmp_path / "missing")
