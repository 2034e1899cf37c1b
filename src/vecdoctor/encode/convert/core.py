"""The steps every conversion shares, for bi-encoders and cross-encoders alike.

1. :func:`cached_variant`: the converted folder in the models cache, when it loads (every
   file's checksum and the export header verified) and is still usable; otherwise convert.
2. :func:`save_variant`: refuse to overwrite what is not a converted model, export inside a
   temporary folder, check the graph against PyTorch (the exporter's ``build`` step), write
   ``vecdoctor_export.json`` and swap the folder in atomically.

What differs between a bi-encoder and a cross-encoder (inputs, outputs, the check and its
tolerance) lives in the exporter's ``build`` callable.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vecdoctor.config import ModelPrecision
from vecdoctor.encode.convert.cache import (
    EXPORT_FILE,
    ConvertedModel,
    describe_variant,
    load_converted,
)
from vecdoctor.errors import IncompatibleError, InputError
from vecdoctor.io import atomic_dir
from vecdoctor.models import ResolvedModel
from vecdoctor.persist import CONVERTED, check_output

logger = logging.getLogger(__name__)


@dataclass
class Built:
    """What an exporter's ``build(folder)`` step made in ``folder``."""

    graph: str
    """The graph's file name inside the folder."""
    check: dict[str, Any]
    """The comparison against PyTorch (the exporter raised already when it failed)."""
    module: Any
    """The traced PyTorch module (its ``hidden_size`` and ``max_positions`` are recorded)."""
    max_length: int
    """Tokens per calibration/check input."""
    calibration: list[str] = field(default_factory=list)
    """Texts the graph was calibrated on (static int8 only)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Entries of the export header particular to this kind of model."""


def cached_variant(
    folder: Path, usable: Callable[[ConvertedModel], bool] | None = None
) -> ConvertedModel | None:
    """The converted variant in ``folder``; ``None`` when it is missing, damaged (a warning
    says why) or not ``usable`` (e.g. calibrated on other texts): then convert it again."""
    try:
        found = load_converted(folder)
    except FileNotFoundError:
        return None
    except IncompatibleError as exc:
        logger.warning("%s; converting again", exc)
        return None
    if usable is not None and not usable(found):
        return None
    return found


def check_target(target: Path, force: bool, refuse_foreign: bool = True) -> None:
    """Refuse to replace a converted model unless ``force``; with ``refuse_foreign`` (a folder
    the user named) also anything that is not a converted model vecdoctor wrote."""
    if refuse_foreign:
        check_output(target, CONVERTED, force, replace_same=False)
    elif (target / EXPORT_FILE).exists() and not force:
        raise InputError(
            f"{target} already holds a converted model; pass force=True (--force) to replace it"
        )


def save_variant(
    resolved: ResolvedModel,
    backend: str,
    precision: ModelPrecision,
    target: Path,
    build: Callable[[Path], Built],
    started: float | None = None,
) -> ConvertedModel:
    """Run ``build`` in a temporary folder, describe what it made and install it at ``target``
    in one step (a kill or an error leaves the previous folder as it was). ``started``: the
    ``time.perf_counter()`` the conversion's time counts from (default: now)."""
    started = time.perf_counter() if started is None else started
    with atomic_dir(target) as tmp:
        made = build(tmp)
        info = describe_variant(
            resolved, backend, precision, made.graph, tmp, made.calibration, made.check,
            made.max_length, time.perf_counter() - started, made.module,
        )
        info.update(made.extra)
        (tmp / EXPORT_FILE).write_text(json.dumps(info, indent=2))
    return load_converted(target)
