"""Shared plumbing for fitted vector objects (transforms, quantizers): input checks and persistence.

Every fitted object saves to one folder: ``config.json`` (class, parameters, library version,
model id, fingerprint, dimension) plus arrays as ``.npy``. Loading re-checks all of it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from vecdoctor.errors import IncompatibleError, InputError

logger = logging.getLogger(__name__)

CONFIG = "config.json"
FITTED_FORMAT = 1
"""Format of a fitted object's folder (transforms, quantizers)."""


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
    from vecdoctor.persist import header

    return {
        **header(type(obj).__name__, FITTED_FORMAT),
        "params": params,
        "dim": int(obj.dim_),
        "n_samples": int(obj.n_samples_),
        "model_id": obj.model_id_,
        "fingerprint": obj.fingerprint_,
    }


def read_config(folder: str | Path, expected_class: str | tuple[str, ...]) -> dict[str, Any]:
    """Read and check ``folder/config.json`` of a saved fitted object."""
    from vecdoctor.folders import child as safe_child
    from vecdoctor.folders import read_json

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
    from vecdoctor.persist import read_header

    read_header(config, config["class"], FITTED_FORMAT, folder / CONFIG)
    return config


def load_array(folder: Path, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Load ``folder/name`` and check its shape against the config."""
    from vecdoctor.folders import child as safe_child
    from vecdoctor.io import load_npy

    arr = load_npy(safe_child(folder, name))
    if arr.dtype.kind not in "fiu" or (arr.dtype.kind == "f" and not np.isfinite(arr).all()):
        raise IncompatibleError(
            f"{folder / name}: holds {arr.dtype} values{' that are not finite' if arr.dtype.kind == 'f' else ''}, "
            "expected finite numbers; the folder is damaged, save it again"
        )
    if shape is not None and tuple(arr.shape) != tuple(shape):
        raise IncompatibleError(
            f"{folder / name}: shape {tuple(arr.shape)} does not match {tuple(shape)} "
            f"from {folder / CONFIG}; the folder is inconsistent, save it again"
        )
    return arr


class SavedArrays:
    """``save(folder)`` / ``load(folder)`` for fitted objects: a readable config.json holding
    every constructor parameter, plus one ``.npy`` per fitted array named in ``_arrays``.

    Subclasses provide ``to_config()``, ``_params_from(config)``-compatible ``params``,
    ``_expected_shape(attr, config)`` and optionally ``_load_extra(config)`` (before the
    arrays) and ``_after_load()`` (after them).
    """

    _arrays: ClassVar[tuple[str, ...]] = ()
    _name: ClassVar[str] = "object"
    # set by fit() or load()
    dim_: int
    n_samples_: int
    fingerprint_: str | None
    model_id_: str | None
    source_: str | None

    def to_config(self) -> dict[str, Any]:  # pragma: no cover
        raise NotImplementedError

    def _require_fitted(self) -> None:  # pragma: no cover
        raise NotImplementedError

    def save(self, folder: str | Path, force: bool = False) -> Path:
        """Write config.json and one .npy per fitted array; the folder is replaced atomically,
        and only when it holds an object of this kind (or with ``force``)."""
        from vecdoctor.io import atomic_dir, save_npy, write_json
        from vecdoctor.persist import TRANSFORM, OutputKind, check_output

        self._require_fitted()
        folder = Path(folder)
        name = type(self).__name__
        kind = TRANSFORM if name in TRANSFORM.classes else OutputKind(name, CONFIG, (name,))
        check_output(folder, kind, force)
        with atomic_dir(folder) as tmp:
            config = self.to_config()
            for attr, filename in config["arrays"].items():
                save_npy(tmp / filename, getattr(self, attr))
            write_json(tmp / CONFIG, config)
        return folder

    @classmethod
    def load(cls, folder: str | Path, fingerprint: str | None = None, dim: int | None = None) -> Any:
        """Load a saved object; ``fingerprint``/``dim``, if given, must match the fitted ones."""
        folder = Path(folder)
        config = read_config(folder, cls.__name__)
        source = str(folder / CONFIG)
        if dim is not None:
            check_dim(int(config["dim"]), int(dim), cls._name, source)
        check_fingerprint(config.get("fingerprint"), fingerprint, cls._name, source)
        try:
            obj = cls(**config["params"])
        except TypeError as exc:
            raise InputError(f"{source}: bad params ({exc})") from None
        try:
            obj.dim_ = int(config["dim"])
            obj.n_samples_ = int(config["n_samples"])
            obj.fingerprint_ = config.get("fingerprint")
            obj.model_id_ = config.get("model_id")
            obj._load_extra(config)
            arrays = config["arrays"]
            if not isinstance(arrays, dict) or set(arrays) != set(cls._arrays):
                raise InputError(f"{source}: expected arrays {list(cls._arrays)}, got {arrays!r}")
            for attr, filename in arrays.items():
                setattr(obj, attr, load_array(folder, filename, obj._expected_shape(attr, config)))
            obj._after_load()
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(f"{source}: missing or bad entry ({exc}); save it again") from None
        obj.source_ = source
        return obj

    def _load_extra(self, config: dict[str, Any]) -> None:
        pass

    def _after_load(self) -> None:
        pass

    def _expected_shape(self, attr: str, config: dict[str, Any]) -> tuple[int, ...]:  # pragma: no cover
        raise NotImplementedError
