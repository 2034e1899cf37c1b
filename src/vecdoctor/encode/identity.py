"""What identifies an encoder's vectors: the fingerprint of its config, and whether two configs
give the same vectors (so that an index built through one can be queried through the other)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any


def config_fingerprint(config: dict[str, Any], leave_out: Sequence[str] = ()) -> str:
    """A short hash of an encoder config (:meth:`Encoder.config`) without ``leave_out`` keys.

    Keys at their default (None, fp32) are left out, so adding an option later does not change
    the fingerprints of existing indexes and caches.
    """
    keys = {
        k: v for k, v in config.items()
        if k not in ("dimension", "fingerprint", *leave_out) and v is not None
        and not (k == "precision" and v == "fp32")
    }
    return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:16]


def same_vectors(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two encoder configs give the same vectors: equal but for the backend, at fp32.

    The fp32 graphs vecdoctor converts are checked against PyTorch (cosine > 0.9999) when
    they are made, so an index built on one backend can be queried through another.
    """
    fp32 = all(str(c.get("precision") or "fp32") == "fp32" for c in (a, b))
    return fp32 and config_fingerprint(a, ("backend",)) == config_fingerprint(b, ("backend",))
