"""The checkup's decision rules on small synthetic cases: each rule alone, then composed."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from vecdoctor.checkup.rules import (
    MIN_GAIN,
    Decision,
    Frame,
    Measured,
    choose_long_text,
    choose_mode,
    choose_pooling,
    choose_precision,
    choose_rerank,
    choose_transform,
    decide,
    do_no_harm,
    gate,
    whitening_kept,
)


def row(name: str, values: list[float] | float, n: int = 60, frame: Frame = Frame.CORPUS,
        size: int | None = None) -> Measured:
    """A variant whose per-query nDCG@10 repeats ``values`` over ``n`` queries."""
    vals = values if isinstance(values, list) else [values]
    per_query = {f"q{i}": vals[i % len(vals)] for i in range(n)}
    return Measured(name, sum(per_query.values()) / n, per_query, size, frame)


def scores(*rows: Measured) -> dict[str, Measured]:
    return {r.name: r for r in rows}


NOISY = [0.4, -0.35, 0.1, 0.3, -0.3, -0.05]  # a mean gain of +0.0167 that a paired test cannot prove


def test_gate_needs_the_margin_and_the_paired_test():
    base = row("dense", 0.5)
    assert gate(row("a", 0.52), base).passes  # +0.02 on every query: p tiny
    assert not gate(row("b", 0.504), base).passes  # below the margin
    noisy = gate(row("c", [0.5 + g for g in NOISY]), base)
    assert noisy.delta > MIN_GAIN and noisy.p is not None and noisy.p >= 0.05 and not noisy.passes
    assert gate(Measured("x", 0.6), Measured("y", 0.5)).passes  # no per-query values: the size


@pytest.mark.parametrize(("bm25", "self_supervised", "mode"), [
    (0.55 + 0.004, False, "hybrid"),  # a lead inside the margin: hybrid, the default, stays
    ([0.55 + 0.03 + g for g in NOISY], False, "bm25"),  # labels: a lead past the margin wins
    ([0.55 + 0.03 + g for g in NOISY], True, "hybrid"),  # self-supervised: it must be proven
    (0.60, True, "bm25"),  # proven on self-supervised queries too
    (0.40, False, "hybrid"),
])
def test_the_retrieval_mode(bm25, self_supervised, mode):
    found, decision = choose_mode(scores(row("bm25", bm25), row("dense", 0.45), row("hybrid", 0.55)),
                                  self_supervised)
    assert found == mode and decision.choice == mode and decision.recommended
    assert "bm25 " in decision.evidence and "hybrid 0.5500" in decision.evidence
    if mode == "bm25" and not self_supervised:
        assert "not proven" in decision.evidence and "more judged queries" in decision.evidence
    assert (decision.gain or 0) > 0 or mode == "hybrid"


def test_a_lexical_sample_never_switches_the_mode():
    lexical = scores(*(row(n, v, frame=Frame.LEXICAL_SAMPLE) for n, v in
                       (("bm25", 0.4), ("dense", 0.7), ("hybrid", 0.6))))
    mode, decision = choose_mode(lexical)
    assert mode == "hybrid" and "BM25's hard distractors only" in decision.evidence


def test_the_best_passing_transform_and_whitening_k():
    s = scores(row("dense", 0.5), row("dense+whiten", 0.45), row("dense+whiten-k", 0.62),
               row("dense+abtt", 0.58))
    best, decisions = choose_transform(s, True, "")
    assert best == "whitening-k"
    assert {d.choice: d.recommended for d in decisions} == {
        "whitening": False, "whitening-k": True, "abtt": False}
    assert whitening_kept(decisions)
    best, decisions = choose_transform(s, False, "; not applied")
    assert best is None and not any(d.recommended for d in decisions)
    assert "not applied" in next(d.evidence for d in decisions if d.choice == "abtt")


def long_text(gains: dict[str, list[float]], share: float | None = 0.4) -> tuple[dict, dict]:
    s = scores(row("dense", 0.5), *(row(n, [0.5 + g for g in v]) for n, v in gains.items()))
    settings, decisions = choose_long_text(s, True, "", share)
    return settings, {d.choice: d for d in decisions}


def test_one_chunk_scoring_is_chosen_up_front_and_gated_once():
    """MaxP + first passes on its own (p < 0.05): no correction for a second look rejects it,
    whatever MaxP alone scores."""
    first = [0.06, 0.02, 0.04, 0.08, -0.01, 0.03]
    settings, made = long_text({"dense+chunks-first": first, "dense+chunks": [0.0]})
    assert settings == {"chunks": "max+first"} and made["chunks max+first"].recommended
    assert "MaxP is not measurably better" in made["chunks max+first"].evidence


def test_maxp_alone_replaces_maxp_plus_first_only_through_the_gate():
    settings, made = long_text({"dense+chunks-first": [0.03], "dense+chunks": [0.09]})
    assert settings == {"chunks": "max"} and made["chunks max"].recommended
    # MaxP higher, but not measurably: MaxP + first is the one gated, and it fails here
    settings, made = long_text({"dense+chunks-first": [0.5 * g for g in NOISY],
                                "dense+chunks": [0.04 + g for g in NOISY]})
    assert settings == {} and made["truncation"].recommended
    assert "40% of texts" in made["truncation"].evidence


def test_chunks_replace_passing_windows_only_when_measurably_better():
    settings, made = long_text({"dense+window": [0.06, 0.04, 0.05],
                                "dense+chunks-first": [0.07, 0.04, 0.05]})
    assert settings == {"window": "256:128:max"}
    assert "the cheaper windows stay" in made["windows 256:128:max"].evidence
    settings, _ = long_text({"dense+window": [0.06, 0.04, 0.05],
                             "dense+chunks-first": [0.12, 0.1, 0.11]})
    assert settings == {"chunks": "max+first"}


def test_no_truncation_decision_where_texts_fit():
    settings, made = long_text({"dense+window": [0.0]}, share=None)
    assert settings == {} and "truncation" not in made


def test_pooling_and_rerank():
    s = scores(row("dense", 0.5), row("dense+cls", 0.45), row("dense+attention", 0.53))
    best, decisions = choose_pooling(s, True)
    assert best == "attention" and [d.recommended for d in decisions] == [False, True]
    r = scores(row("hybrid", 0.5), row("hybrid+rerank", 0.58))
    assert choose_rerank(r, "hybrid")[0] and not choose_rerank(r, "bm25")[0]
    assert choose_rerank(scores(row("hybrid", 0.5), row("hybrid+rerank", 0.47)), "hybrid")[0] is False


@pytest.mark.parametrize(("binary", "int8", "storage"), [
    (0.500, 0.500, "binary"),
    (0.494, 0.499, "int8"),  # binary keeps 98.8%: below 99%
    (0.7, 0.7, "binary"),
])
def test_storage_keeps_99_percent_and_loses_less_than_the_margin(binary, int8, storage):
    dense = 0.5 if binary < 0.7 else 0.7
    s = scores(row("dense", dense, size=1536), row("binary", binary, size=48),
               row("int8", int8, size=384))
    found, decisions = choose_precision(s, True, "")
    assert found == storage
    assert "48 instead of 1536 bytes" in decisions[0].evidence
    # 99% of a high score is more than the margin: binary at 0.7 - 0.006 keeps 99.1% but loses 0.006
    lossy = scores(row("dense", 0.70), row("binary", 0.694), row("int8", 0.70))
    assert choose_precision(lossy, True, "")[0] == "int8"


def test_do_no_harm():
    simple = scores(row("bm25", 0.60), row("dense", 0.45), row("hybrid", 0.50))
    replaced = do_no_harm(row("recommended", 0.50), simple)
    assert replaced is not None and replaced.choice == "bm25" and not replaced.recommended
    assert replaced.warning and "beats the recommended pipeline" in replaced.evidence
    unproven = do_no_harm(row("recommended", [0.5 + g for g in NOISY]),
                          scores(row("bm25", 0.53), row("hybrid", 0.5)))
    assert unproven is not None and unproven.recommended and unproven.warning
    assert "without proof" in unproven.evidence and "would settle it" in unproven.evidence
    assert do_no_harm(row("recommended", 0.55), simple | {"bm25": row("bm25", 0.553)}) is None


def test_decide_composes_the_rules_and_takes_encodings_from_their_own_frame():
    main = scores(row("bm25", 0.40), row("dense", 0.50, size=1536), row("hybrid", 0.55),
                  row("dense+abtt", 0.58), row("binary", 0.50, size=48))
    sample = scores(row("dense", 0.70, frame=Frame.SAMPLE),
                    row("dense+chunks-first", 0.75, frame=Frame.SAMPLE))
    settings, decisions = decide(main, "minilm", encodings=sample, truncated_share=0.5)
    assert (settings["mode"], settings["transform"], settings["chunks"], settings["storage"]) == (
        "hybrid", "abtt", "max+first", "binary")
    # the chunk gain is read against the sample's own dense (0.70), not the corpus' (0.50)
    chunk = next(d for d in decisions if d.choice == "chunks max+first")
    assert chunk.gain == pytest.approx(0.05) and "vs dense 0.7000" in chunk.evidence
    # sample numbers sit beside whole-corpus ones in one list: they say where they come from
    assert chunk.evidence.endswith("(measured on the quick sample)")
    assert not any("quick sample" in d.evidence for d in decisions if d.topic != "long texts")
    bm25_only = scores(row("bm25", 0.70), row("dense", 0.50), row("hybrid", 0.55),
                       row("dense+abtt", 0.58))
    settings, decisions = decide(bm25_only, "minilm")
    assert settings["mode"] == "bm25" and settings["transform"] is None
    assert "recommended retrieval is bm25 alone" in next(
        d.evidence for d in decisions if d.choice == "abtt")


def test_what_to_do_lists_no_step_with_a_negative_gain_and_warnings_first():
    from vecdoctor.report.checkup import todo_section

    decisions = [Decision("model", "minilm", True, "tie"),
                 Decision("retrieval", "hybrid", True, "hybrid 0.71", -0.0488),
                 Decision("transform", "abtt", False, "abtt 0.60", -0.01),
                 Decision("long texts", "chunks max+first", True, "chunks 0.67", 0.05),
                 Decision("precision", "int8", True, "int8 keeps 99.6%", -0.002),
                 Decision("do no harm", "bm25", True, "the plain bm25 scores higher", -0.046,
                          warning=True),
                 Decision("confirmation", "recommended pipeline", True, "recommended 0.72")]
    lines = todo_section(SimpleNamespace(decisions=decisions)).paragraphs
    assert lines[0].startswith("Before you act: the plain bm25 scores higher")
    assert [line.split(":")[0] for line in lines[1:3]] == ["1. long texts", "2. model"]
    assert not any(line.startswith(("3.", "4.")) for line in lines)
    assert "Smaller storage within the gate's margin: int8" in lines[3]
    assert "Kept as they are" in lines[4] and "retrieval hybrid" in lines[4]
    assert "transform abtt" in lines[5] and "recommended 0.72" in lines[6]


def test_one_verdict_per_topic_in_a_checkup_report():
    from vecdoctor.report.checkup import decided

    decisions = [Decision("transform", "whitening", False, "whitening 0.60 vs dense 0.65"),
                 Decision("precision", "binary", True, "binary keeps 100%"),
                 Decision("precision", "int8", False, "int8 keeps 100%")]
    words = decided(decisions)
    assert words["isotropy"] == words["fixes"]
    assert words["fixes"].startswith("The checkup keeps no transform")
    assert words["quantization"].startswith("The checkup recommends precision binary")
    assert "truncation" not in words


def test_the_model_tie_never_goes_to_a_model_past_the_margin():
    from vecdoctor.evaluate.compare import ModelRow, recommend

    def model(name: str, values: list[float]) -> ModelRow:
        r = row(name, values, n=40)
        return ModelRow(model=name, ndcg_at_10=r.ndcg, per_query=dict(r.per_query),
                        docs_per_second=1000.0 if name == "minilm-l3-onnx" else 10.0,
                        bytes_per_vector=1536)

    # minilm-l3-onnx is 0.039 worse without proof (as on the man pages): minilm stays
    best = model("minilm", [0.33 + g for g in NOISY])
    worse = model("minilm-l3-onnx", [0.291 + g for g in reversed(NOISY)])
    pick, reason = recommend([best, worse], "quality")
    assert pick is best and "not proven" in reason
    # within the margin: a real tie, broken by the cost per token from the model's size
    close = model("minilm-l3-onnx", [0.329 + g for g in NOISY])
    pick, reason = recommend([best, close], "quality")
    assert pick is close and "chosen as the cheapest to run" in reason and "0.5" in reason
    # a tie with a costlier model keeps the cheaper one, whatever a timing said
    slow_close = ModelRow(model="e5-small-q4", ndcg_at_10=close.ndcg_at_10,
                          per_query=close.per_query, docs_per_second=1e6, bytes_per_vector=1536)
    assert recommend([best, slow_close], "quality")[0] is best
