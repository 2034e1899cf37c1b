"""Vector caches: hits, misses, TTL, resumable disk cache, keys per pipeline."""

from __future__ import annotations

import time

import numpy as np

from vecdoctor.encode.cache import VectorCache, cache_key
from vecdoctor.encode.encoder import Encoder


def test_memory_cache_counts_hits_and_misses(minilm, real_texts):
    enc = Encoder("minilm", cache=VectorCache(max_size=100))
    first = enc.encode(real_texts[:10])
    assert enc.cache_stats.misses == 10 and enc.cache_stats.hits == 0
    second = enc.encode(real_texts[:10])
    assert enc.cache_stats.hits == 10
    np.testing.assert_array_equal(first, second)


def test_lru_evicts_and_ttl_expires():
    cache = VectorCache(max_size=2)
    cache.put_many(["a", "b", "c"], np.ones((3, 4), dtype=np.float32))
    assert cache.get_many(["a"])[0] is None
    ttl = VectorCache(max_size=10, ttl=0.05)
    ttl.put_many(["a"], np.ones((1, 4), dtype=np.float32))
    assert ttl.get_many(["a"])[0] is not None
    time.sleep(0.1)
    assert ttl.get_many(["a"])[0] is None


def test_disk_cache_survives_a_new_process_and_resumes(tmp_path, real_texts):
    folder = tmp_path / "cache"
    enc = Encoder("minilm", cache=folder)
    part = enc.encode(real_texts[:5])  # an "interrupted" run that got through 5 texts
    enc.cache.close()
    again = Encoder("minilm", cache=folder)
    full = again.encode(real_texts[:8])
    assert again.cache_stats.hits == 5 and again.cache_stats.misses == 3
    np.testing.assert_array_equal(full[:5], part)
    assert len(again.cache) == 8


def test_keys_differ_between_pipelines(minilm):
    cls = Encoder("minilm", pooling="cls")
    assert cache_key(minilm.fingerprint, "x") != cache_key(cls.fingerprint, "x")


def test_cached_vectors_are_not_reused_across_poolings(tmp_path, real_texts):
    folder = tmp_path / "cache"
    mean = Encoder("minilm", cache=folder).encode(real_texts[:3])
    cls_enc = Encoder("minilm", pooling="cls", cache=folder)
    cls = cls_enc.encode(real_texts[:3])
    assert cls_enc.cache_stats.hits == 0
    assert not np.allclose(mean, cls)


def test_normalised_and_raw_encoders_share_entries(minilm, real_texts):
    cache = VectorCache(max_size=100)
    normalised = Encoder("minilm", cache=cache).encode(real_texts[:6])
    raw_enc = Encoder("minilm", normalize=False, cache=cache)
    raw = raw_enc.encode(real_texts[:6])
    assert raw_enc.cache_stats.hits == 6 and cache.stats.misses == 6
    norms = np.linalg.norm(raw, axis=1)
    assert not np.allclose(norms, 1.0)  # really unnormalised
    np.testing.assert_allclose(raw / norms[:, None], normalised, atol=1e-6)


def test_windows_reuse_the_plain_encoding_of_each_head(real_texts):
    """A text's first window is the plain pipeline's input: the windowed encoder looks it up."""
    texts = real_texts[:12]
    window = "128:64:max"
    uncached = Encoder("minilm", max_length=128, window=window).encode(texts)
    cache = VectorCache(max_size=1000)
    plain = Encoder("minilm", max_length=128, cache=cache)
    plain.encode(texts)
    windowed = Encoder("minilm", max_length=128, window=window, cache=cache)
    calls = []
    forward = windowed.backend.forward
    windowed.backend.forward = lambda ids, *a, **kw: calls.append(ids.shape[0]) or forward(ids, *a, **kw)
    vecs = windowed.encode(texts)
    np.testing.assert_allclose(vecs, uncached, atol=1e-5)
    seqs, _ = windowed._tok.sequences(texts, windowed.window)
    assert len(seqs) > len(texts)  # some texts really are split
    assert sum(calls) == len(seqs) - len(texts)  # every head came from the cache
    assert windowed.cache_stats.hits == len(texts)  # the heads; the final vectors were misses
    again = Encoder("minilm", max_length=128, window=window, cache=cache).encode(texts)
    np.testing.assert_array_equal(again, vecs)  # now the windowed vectors themselves are cached


def test_every_chunk_is_kept_so_a_second_chunk_index_encodes_nothing(real_texts):
    """Chunks beyond the head are cached under their window and position: encoding the same
    texts' chunks again runs no forward pass and gives the same vectors; another window size
    shares only the heads."""
    texts = real_texts[:12]
    cache = VectorCache(max_size=1000)
    first, owners = Encoder("minilm", max_length=128, cache=cache).encode_chunks(texts)
    assert len(owners) > len(texts)  # some texts really have several chunks
    again = Encoder("minilm", max_length=128, cache=cache)
    calls: list[int] = []
    forward = again.backend.forward
    again.backend.forward = lambda ids, *a, **kw: calls.append(ids.shape[0]) or forward(ids, *a, **kw)
    vecs, same = again.encode_chunks(texts)
    assert calls == [] and np.array_equal(same, owners)
    np.testing.assert_array_equal(vecs, first)
    other = Encoder("minilm", max_length=128, window="64:32", cache=cache)
    calls_other: list[int] = []
    fwd = other.backend.forward
    other.backend.forward = lambda ids, *a, **kw: calls_other.append(ids.shape[0]) or fwd(ids, *a, **kw)
    _, other_owners = other.encode_chunks(texts)
    # 64-token windows: only a text that fits one window is the plain input (its head is shared)
    single = int((np.bincount(other_owners) == 1).sum())
    assert sum(calls_other) == len(other_owners) - single
    uncached, _ = Encoder("minilm", max_length=128, window="64:32").encode_chunks(texts)
    np.testing.assert_allclose(other.encode_chunks(texts)[0], uncached, atol=1e-5)
