"""Pooling functions: token states (batch, seq, dim) and a mask -> one vector per sequence.

One code path for every backend: backends return token states as numpy arrays.
"""

from __future__ import annotations

import numpy as np

from vecdoctor.config import Pooling


def mean_pool(states: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean over non-padding tokens (special tokens included, as sentence-transformers does)."""
    m = mask[..., None].astype(states.dtype)
    return (states * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)


def cls_pool(states: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return states[:, 0].copy()


def max_pool(states: np.ndarray, mask: np.ndarray) -> np.ndarray:
    masked = np.where(mask[..., None] > 0, states, -np.inf)
    return masked.max(axis=1)


def weighted_pool(states: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Sum of token states weighted by ``weights`` (batch, seq), each row summing to 1."""
    return np.einsum("bs,bsd->bd", weights.astype(states.dtype), states)


def subword_weights(word_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Weights that make a weighted sum equal the mean over words of each word's sub-token mean.

    ``word_ids`` holds -1 for special and padding tokens. A token of a word split into c pieces
    in a sequence of W words gets weight 1 / (c * W). Rows without words fall back to the mean.
    """
    weights = np.zeros(word_ids.shape, dtype=np.float32)
    for row in range(word_ids.shape[0]):
        ids = word_ids[row]
        valid = ids >= 0
        if not valid.any():
            weights[row] = mask[row] / max(mask[row].sum(), 1)
            continue
        _, inverse, counts = np.unique(ids[valid], return_inverse=True, return_counts=True)
        weights[row, valid] = 1.0 / (counts[inverse] * len(counts))
    return weights


def attention_weights(first_attention: np.ndarray, special: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Last-layer attention from the first token (mean of heads), special/padding masked, renormalised."""
    w = first_attention * (mask > 0) * (special == 0)
    total = w.sum(axis=1, keepdims=True)
    fallback = (mask / np.clip(mask.sum(axis=1, keepdims=True), 1, None)).astype(np.float32)
    return np.where(total > 0, w / np.where(total > 0, total, 1.0), fallback).astype(np.float32)


def pool(
    pooling: Pooling,
    states: np.ndarray,
    mask: np.ndarray,
    word_ids: np.ndarray | None = None,
    special: np.ndarray | None = None,
    first_attention: np.ndarray | None = None,
) -> np.ndarray:
    """Apply one pooling mode to a padded batch."""
    if pooling is Pooling.MEAN:
        return mean_pool(states, mask)
    if pooling is Pooling.CLS:
        return cls_pool(states, mask)
    if pooling is Pooling.MAX:
        return max_pool(states, mask)
    if pooling is Pooling.SUBWORD:
        assert word_ids is not None
        return weighted_pool(states, subword_weights(word_ids, mask))
    if pooling is Pooling.ATTENTION:
        assert first_attention is not None and special is not None
        return weighted_pool(states, attention_weights(first_attention, special, mask))
    raise ValueError(f"pooling {pooling} is not computed from token states")
