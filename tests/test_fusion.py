"""Rank fusion: exact hand-computed values, and no reward for being absent from a run."""

from __future__ import annotations

import random

import pytest

from vecdoctor.config import Fusion
from vecdoctor.errors import InputError
from vecdoctor.search.fusion import min_max, rrf, weighted


def as_dict(fused):
    return dict(fused)


def test_rrf_exact_values():
    fused = rrf([[("a", 9.0), ("b", 5.0), ("c", 1.0)], [("c", 0.9), ("a", 0.1)]], k=60)
    scores = as_dict(fused)
    assert scores["a"] == pytest.approx(1 / (60 + 1) + 1 / (60 + 2))
    assert scores["c"] == pytest.approx(1 / (60 + 3) + 1 / (60 + 1))
    assert scores["b"] == pytest.approx(1 / (60 + 2))
    assert [d for d, _ in fused] == ["a", "c", "b"]


def test_rrf_ignores_scores_and_uses_k():
    fused = as_dict(rrf([[("x", -100.0), ("y", -200.0)]], k=0))
    assert fused == {"x": pytest.approx(1.0), "y": pytest.approx(0.5)}


def test_rrf_weights():
    fused = as_dict(rrf([[("a", 1.0)], [("b", 1.0)]], k=60, weights=[2.0, 1.0]))
    assert fused["a"] == pytest.approx(2 / 61)
    assert fused["b"] == pytest.approx(1 / 61)


def test_weighted_exact_values():
    runs = [[("a", 10.0), ("b", 5.0), ("c", 0.0)], [("b", 0.9), ("a", 0.1)]]
    fused = weighted(runs, weights=[0.5, 0.5])
    # run 1 normalises to a=1, b=0.5, c=0; run 2 to b=1, a=0
    assert as_dict(fused) == {"a": pytest.approx(0.5), "b": pytest.approx(0.75), "c": 0.0}
    assert [d for d, _ in fused] == ["b", "a", "c"]


def test_min_max_constant_run_maps_to_one():
    assert min_max([("a", 3.0), ("b", 3.0)]) == [("a", 1.0), ("b", 1.0)]
    assert min_max([]) == []


def test_missing_document_is_not_rewarded_with_negative_scores():
    # Dense cosines can be negative; a document absent from the dense run must not rank
    # above one that the dense run found, all else equal.
    bm25 = [("found_by_both", 3.0), ("bm25_only", 3.0)]
    dense = [("found_by_both", -0.4)]
    for fused in (weighted([bm25, dense]), rrf([bm25, dense])):
        scores = as_dict(fused)
        assert scores["found_by_both"] > scores["bm25_only"]


def test_ties_are_broken_by_first_appearance():
    fused = rrf([[("b", 1.0)], [("a", 1.0)]])
    assert [d for d, _ in fused] == ["b", "a"]


@pytest.mark.parametrize("method", ["rrf", "weighted"])
def test_absence_never_helps(method):
    """Randomised property: dropping a document from one run never raises its fused score,
    and adding it to a run where it was missing never lowers it."""
    fuse = rrf if method == "rrf" else weighted
    rng = random.Random(7)
    for _ in range(200):
        docs = [f"d{i}" for i in range(8)]
        runs = []
        for _ in range(2):
            chosen = rng.sample(docs, rng.randint(1, 8))
            scores = sorted((rng.uniform(-1, 1) for _ in chosen), reverse=True)
            runs.append(list(zip(chosen, scores, strict=True)))
        before = as_dict(fuse(runs))
        doc = rng.choice([d for d, _ in runs[0]])
        if len(runs[0]) > 1:
            dropped = [[p for p in runs[0] if p[0] != doc], runs[1]]
            assert as_dict(fuse(dropped)).get(doc, 0.0) <= before[doc] + 1e-12
        missing = [d for d in docs if d not in dict(runs[1])]
        if missing:
            extra = missing[0]
            grown = [runs[0], runs[1] + [(extra, runs[1][-1][1] - 1.0)]]
            assert as_dict(fuse(grown))[extra] >= before.get(extra, 0.0) - 1e-12


def test_empty_runs():
    assert rrf([[], []]) == []
    assert weighted([[], []]) == []


def test_bad_parameters_name_the_value():
    with pytest.raises(InputError, match="-1"):
        rrf([[("a", 1.0)]], k=-1)
    with pytest.raises(InputError, match="one weight per run"):
        weighted([[("a", 1.0)], [("b", 1.0)]], weights=[1.0])
    with pytest.raises(InputError, match="not all 0"):
        rrf([[("a", 1.0)]], weights=[0.0])
    with pytest.raises(InputError, match="rrf, weighted"):
        Fusion.parse("borda")
