"""Shared plumbing for fitted vector objects (transforms, quantizers): input checks and persistence.

Every fitted object saves to one folder: ``config.json`` (class, parameters, library version,
model id, fingerprint, dimension) plus arrays as ``.npy``. Loading re-checks all of it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from vecdoctor.errors import IncompatibleError, InputError

logger = logging.getLogger(__name__)

CONFIG = "config.json"


def as_vectors(x: Any, what: str = "vectors", min_rows: int = 1) -> np.ndarray:
    """Return ``x`` as a C-contiguous float32 matrix (n, d); reject bad shapes, dtypes and NaN."""
    if isinstance(x, (str, bytes)):
        raise TypeError(f"{what}: expected a 2-D array of numbers, got {type(x).__name__}")
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what}: cannot be read as an array ({exc})") from None
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise TypeError(f"{what}: expected numbers, got dtype {arr.dtype}; pass a float array")
    if arr.ndim == 1:
        raise InputError(
            f"{what}: got a 1-D array of shape {arr.shape}; pass a 2-D (n, d) array, "
            "e.g. x[None, :] for a single vector"
        )
    if arr.ndim != 2:
        raise InputError(f"{what}: expected a 2-D (n, d) array, got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise InputError(f"{what}: vectors have 0 dimensions")
    if arr.shape[0] < min_rows:
        raise InputError(f"{what}: need at least {min_rows} vectors, got {arr.shape[0]}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))
        row, col = (int(v) for v in bad[0])
        raise InputError(
            f"{what}: {len(bad)} NaN or infinite values (first at row {row}, column {col}); "
            "remove or re-encode those texts before fitting"
        )
    return arr


def check_dim(expected: int, got: int, name: str, source: str | None) -> None:
    """Raise :class:`IncompatibleError` when the input dimension differs from the fitted one."""
    if expected != got:
        where = f" ({source})" if source else ""
        raise IncompatibleError(
            f"{name} was fitted on {expected}-d vectors{where} but got {got}-d input; "
            "use the same model and pooling it was fitted with, "
            f"or fit a new {name} on these vectors"
        )


def check_fingerprint(expected: str | None, got: str | None, name: str, source: str | None) -> None:
    """Raise when both fingerprints are known and differ (other model, pooling or windows)."""
    if expected and got and expected != got:
        where = f" ({source})" if source else ""
        raise IncompatibleError(
            f"{name} was fitted for encoder fingerprint {expected}{where} but is applied to "
            f"vectors from encoder fingerprint {got}; refit it with this encoder, or encode "
            "with the model, pooling and windows it was fitted with"
        )


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; all-zero rows stay zero."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norms > 0, norms, 1.0)).astype(np.float32, copy=False)


def base_config(obj: Any, params: dict[str, Any]) -> dict[str, Any]:
    """The config.json header every fitted object writes."""
    from vecdoctor import __version__

    return {
        "class": type(obj).__name__,
        "vecdoctor_version": __version__,
        "params": params,
        "dim": int(obj.dim_),
        "n_samples": int(obj.n_samples_),
        "model_id": obj.model_id_,
        "fingerprint": obj.fingerprint_,
    }


def read_config(folder: str | Path, expected_class: str | tuple[str, ...]) -> dict[str, Any]:
    """Read and check ``folder/config.json`` of a saved fitted object."""
    from vecdoctor.io import read_json, safe_child

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder; pass the folder written by save()")
    config = read_json(safe_child(folder, CONFIG))
    if not isinstance(config, dict) or "class" not in config or "dim" not in config:
        raise InputError(f"{folder / CONFIG}: not a vecdoctor saved object (no 'class'/'dim')")
    dim = config["dim"]
    if not isinstance(config["class"], str) or isinstance(dim, bool) or not isinstance(dim, int):
        raise InputError(
            f"{folder / CONFIG}: 'class' must be a string and 'dim' an integer, got "
            f"{config['class']!r} and {dim!r}; save the object again"
        )
    if dim < 1:
        raise InputError(f"{folder / CONFIG}: 'dim' must be >= 1, got {dim}; save it again")
    names = (expected_class,) if isinstance(expected_class, str) else expected_class
    if config["class"] not in names:
        raise IncompatibleError(
            f"{folder / CONFIG}: holds a {config['class']}, expected {' or '.join(names)}"
        )
    return config


def load_array(folder: Path, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Load ``folder/name`` and check its shape against the config."""
    from vecdoctor.io import load_npy, safe_child

    arr = load_npy(safe_child(folder, name))
    if shape is not None and tuple(arr.shape) != tuple(shape):
        raise IncompatibleError(
            f"{folder / name}: shape {tuple(arr.shape)} does not match {tuple(shape)} "
            f"from {folder / CONFIG}; the folder is inconsistent, save it again"
        )
    return arr
