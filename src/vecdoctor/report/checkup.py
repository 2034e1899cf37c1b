"""Sections of the checkup report: the recommended pipeline, variants, model comparison, and
the diagnosis sections of the chosen model."""

from __future__ import annotations

from typing import Any

from vecdoctor.report.html import Figure, Section, Table, render_html


def _fusion_words(p: Any) -> str:
    if str(p.fusion) == "rrf":
        return f" (rrf, k={p.rrf_k:g})"
    weights = f", bm25 {p.fusion_weights[0]:g} / dense {p.fusion_weights[1]:g}" if p.fusion_weights else ""
    return f" ({p.fusion}{weights})"


def recommendation_section(result: Any) -> Section:
    p = result.pipeline
    parts = [
        f"model {p.model}" + (f" on {p.backend} {p.model_precision}" if p.backend else ""),
        f"{p.mode} retrieval" + (_fusion_words(p) if str(p.mode) == "hybrid" else ""),
        f"{p.pooling or 'default'} pooling",
        (f"chunk-level retrieval ({p.chunks}, chunks of {p.window or 'the model input'})"
         if p.chunks else f"windows {p.window}" if p.window else "no windows"),
        f"transform {p.transform}" if p.transform else "no transform",
        f"{p.storage} storage",
        f"rerank {p.rerank}" if p.rerank else "no reranking",
    ]
    note = (
        "Numbers come from self-supervised queries (a sentence removed from its document), not from "
        "human judgements." if result.meta.get("self_supervised") else
        f"Numbers come from {result.meta.get('queries')} judged queries of split {result.meta.get('split')}."
    )
    rule = ("A fix is recommended only when it adds at least 0.005 nDCG@10 with a paired randomization "
            "test p < 0.05; quantized storage only when it keeps 99% of float32 nDCG@10.")
    table = Table(
        ("topic", "choice", "recommended", "evidence (measured on this data)"),
        tuple((d.topic, d.choice, d.recommended, d.evidence) for d in result.decisions),
        caption="Every choice and the measurement behind it",
    )
    return Section("Recommended pipeline", ("; ".join(parts) + ".", note, rule), (table,),
                   anchor="recommended-pipeline")


def _variant_table(rep: Any, estimate: dict[str, Any], caption: str) -> Table:
    rows = []
    for r in rep.results:
        m = r.evaluation.metrics
        est = (estimate.get(r.name) or {}).get("value") if estimate else None
        rows.append((r.name, m.get("ndcg@10"), *((est,) if estimate else ()),
                     m.get("recall@10"), m.get("recall@100"), m.get("mrr@10"), r.docs_per_second,
                     r.query_ms_p50, r.bytes_per_doc, r.baseline, r.delta_ndcg, r.p_value))
    return Table(
        ("variant", "nDCG@10", *(("nDCG@10, whole corpus",) if estimate else ()), "recall@10",
         "recall@100", "MRR@10", "encode docs/s", "query p50 ms", "bytes/doc", "vs", "Δ nDCG@10", "p"),
        tuple(rows), caption=caption, digits=4)


def variants_section(result: Any) -> Section:
    from vecdoctor.report import figures

    rep = result.variants
    estimate = result.meta.get("full_corpus_estimate") or {}
    frame = result.meta.get("frame", "corpus")
    where = "the whole corpus" if frame == "corpus" else f"a quick sample ({frame})"
    tables = [_variant_table(rep, estimate, f"{rep.num_queries} queries over {rep.num_docs} "
                                            f"documents ({where}), model {rep.model}")]
    sample = getattr(result, "sample_variants", None)
    if sample is not None:
        tables.append(_variant_table(
            sample, estimate, f"Variants that encode differently, on the quick sample: "
            f"{sample.num_queries} queries over {sample.num_docs} documents; their whole-corpus "
            "number is the corpus' dense plus their gain over dense on the sample"))
    shown = [*rep.results, *(sample.results if sample is not None else [])]
    png = figures.bars([r.name + ("" if r in rep.results else " (sample)") for r in shown],
                       [("nDCG@10", [r.ndcg for r in shown])], "nDCG@10")
    described = tuple(f"{r.name}: {r.description}" for r in rep.results)
    plan = result.meta.get("quick_plan")
    if plan:
        described += (f"Quick plan: {plan['words']}.",)
    design = result.meta.get("sample_design") or {}
    if design:
        described += (
            f"Quick sample of {design.get('full_documents')} documents: the judged documents, the "
            f"{design.get('neighbours')} best matches ({design.get('neighbours_from')}) of the "
            f"sampled queries in the whole corpus and {design.get('random')} random others.",)
        if frame != "corpus":
            described += (
                ("Dense distractors were not sought, so dense numbers on the sample are "
                 "optimistic: the whole corpus' dense numbers cannot be estimated and do not "
                 "decide the retrieval mode. " if frame == "lexical sample" else "")
                + "The estimate for the whole corpus counts each random document above a "
                f"relevant one as the {design.get('weight')} documents it stands for.",)
    touched = max((r.self_hits for r in rep.results), default=0)
    if touched:
        described += (f"{touched} queries are themselves documents of the corpus: their own "
                      "document was left out of their results, as BEIR and MTEB evaluate "
                      "(--keep-self-hits counts it).",)
    return Section("Pipeline variants", described, tuple(tables), (Figure("nDCG@10 per variant", png),),
                   anchor="pipeline-variants")


def models_section(result: Any) -> Section:
    from vecdoctor.report import figures

    comp = result.comparison
    sampled = any(r.ndcg_on_sample is not None for r in comp.rows)
    rows = [
        (r.model, r.dimension, r.backend, r.precision, r.ndcg_at_10,
         *((r.ndcg_on_sample,) if sampled else ()), r.recall_at_10, r.docs_per_second,
         r.query_ms_p50, r.isotropy, r.mean_cosine, r.bytes_per_vector,
         "error" if r.error else "skipped" if r.skipped else "")
        for r in comp.rows
    ]
    notes = tuple(f"{r.model}: {'error' if r.error else 'skipped'}: {r.error or r.skipped}."
                  for r in comp.rows if r.error or r.skipped)
    caption = "Dense retrieval with each model's own pooling, exact search"
    if sampled:
        caption += "; models are compared on nDCG@10 estimated for the whole corpus"
        drawn = result.meta.get("model_sample") or result.meta.get("sample_design") or {}
        if len(comp.rows) > 1:  # several models always meet BM25's matches only
            caption += (f", on a quick sample of {drawn.get('documents')} documents whose hard "
                        "distractors are BM25's best matches, which favours no model (a sample "
                        "holding one model's dense matches is harder for that model); every "
                        "model looks better there than on the whole corpus: confirm a close "
                        "choice with a full run")
    table = Table(
        ("model", "dim", "backend", "precision",
         "est. nDCG@10, whole corpus" if sampled else "nDCG@10",
         *(("nDCG@10 on sample",) if sampled else ()), "recall@10", "docs/s", "query p50 ms",
         "isotropy", "mean cosine", "bytes/vector", "note"),
        tuple(rows), caption=caption, digits=4,
    )
    ok = [r for r in comp.rows if r.measured]
    figs: tuple[Figure, ...] = ()
    if len(ok) > 1:  # one bar compares nothing; the table says it
        chosen = next((r.label for r in ok if r.model == comp.recommended
                       and r.backend == (comp.backend or r.backend)
                       and r.precision == (comp.precision or r.precision)), None)
        png = figures.bars([r.label for r in ok], [("nDCG@10", [r.ndcg_at_10 for r in ok])], "nDCG@10",
                           highlight=chosen)
        figs = (Figure("nDCG@10 per model", png),)
    text = (f"Priority: {comp.prefer}. Recommended: {comp.recommended} — {comp.reason}.", *notes)
    return Section("Model comparison", text, (table,), figs, anchor="model-comparison")


def fusion_section(result: Any) -> Section | None:
    """RRF k and the weighted fusion's dense weight on the tuning and the confirming half."""
    from vecdoctor.report import figures

    tuning = getattr(result, "fusion_tuning", None)
    if tuning is None:
        return None
    split = getattr(tuning, "tuned_on", "half")
    how = (f"Fusion tuned on one half of the evaluation queries ({tuning.tuning_queries}), "
           f"confirmed on the other {tuning.confirm_queries}" if split == "half" else
           f"Fusion tuned on the {split} split's {tuning.tuning_queries} queries (the same "
           f"corpus), confirmed on all {tuning.confirm_queries} evaluation queries")
    text = (f"{how}: {tuning.reason}.",)
    tuned = "tuning half" if split == "half" else f"{split} queries (tuning)"
    confirmed = "confirming half" if split == "half" else "evaluation queries"
    figs = (Figure("nDCG@10 per fusion setting",
                   figures.fusion_curves(tuning.curve, (tuned, confirmed))),) if tuning.curve else ()
    return Section("Fusion", text, (), figs, verdict="ok" if tuning.kept else None)


def rerank_section(result: Any) -> Section | None:
    """nDCG@10 and reranking time per depth of the hybrid candidates."""
    from vecdoctor.report import figures

    budget = getattr(result, "rerank_budget", None)
    if budget is None:
        return None
    table = Table(("depth", "nDCG@10", "reranking ms per query"),
                  [(c["depth"], c["ndcg@10"], c["ms_per_query"]) for c in budget.curve], digits=4)
    return Section("Reranker depth", (budget.reason + ".",), (table,),
                   (Figure("nDCG@10 and time per depth", figures.depth_curve(budget.curve)),))


def todo_section(result: Any) -> Section:
    """What to do: first any warning (a simpler option that scored higher), then every step
    that changes the default pipeline with a positive measured gain, largest first; then what
    stays as it is and what was tried and not kept. No step with a negative gain is listed."""
    lines = [f"Before you act: {d.evidence}." for d in result.decisions if d.warning]
    steps = [d for d in result.decisions if d.recommended and not d.warning
             and d.topic not in {"confirmation"} and (d.gain is None or d.gain > 0)]
    steps.sort(key=lambda d: (d.gain is None, -(d.gain or 0.0)))
    for i, d in enumerate(steps, 1):
        gain = "" if d.gain is None else f" ({d.gain:+.4f} nDCG@10)"
        lines.append(f"{i}. {d.topic}: {d.choice}{gain}. {d.evidence}.")
    kept = [d for d in result.decisions if d.recommended and not d.warning
            and d.gain is not None and d.gain <= 0]
    trades = [d for d in kept if d.topic == "precision"]
    kept = [d for d in kept if d not in trades]
    for d in trades:
        lines.append(f"Smaller storage within the gate's margin: {d.choice} ({d.gain:+.4f} "
                     f"nDCG@10). {d.evidence}.")
    if kept:
        lines.append("Kept as they are (no measured gain to act on): " + "; ".join(
            f"{d.topic} {d.choice} ({d.evidence})" for d in kept) + ".")
    dropped = sorted({f"{d.topic} {d.choice}" for d in result.decisions if not d.recommended})
    if dropped:
        lines.append("Measured and not recommended (no measurable gain on this data, or it "
                     "does not apply): " + "; ".join(dropped) + ".")
    confirm = next((d for d in result.decisions if d.topic == "confirmation"), None)
    if confirm is not None:
        lines.append(f"The whole recommended pipeline, measured end to end: {confirm.evidence}.")
    return Section("What to do", tuple(lines), anchor="what-to-do")


TOPIC_CHECKS = {"transform": ("isotropy", "fixes"), "precision": ("quantization",),
                "long texts": ("truncation",)}
"""Diagnosis checks whose advice the checkup's decision on a topic replaces, so that a report
gives one verdict per topic."""


def decided(decisions: Any) -> dict[str, str]:
    """The checkup's verdict for each diagnosis check it answers, in words."""
    out: dict[str, str] = {}
    for topic, checks in TOPIC_CHECKS.items():
        mine = [d for d in decisions if d.topic == topic]
        if not mine:
            continue
        chosen = next((d for d in mine if d.recommended), None)
        if chosen is not None:
            words = f"The checkup recommends {topic} {chosen.choice}: {chosen.evidence}."
        else:
            default = {"transform": "no transform", "precision": "float32 storage",
                       "long texts": "truncation"}[topic]
            words = (f"The checkup keeps {default}: nothing measured passes its gate ("
                     + "; ".join(d.evidence for d in mine) + ").")
        for check in checks:
            out[check] = words
    return out


def checkup_sections(result: Any) -> list[Section]:
    """The checkup report's sections, in reading order."""
    from vecdoctor.report.diagnosis import diagnosis_sections

    sections = [todo_section(result), recommendation_section(result), variants_section(result)]
    fusion = fusion_section(result)
    sections += [s for s in (fusion, rerank_section(result)) if s is not None]
    sections.append(models_section(result))
    if result.diagnosis is not None:
        sections += diagnosis_sections(result.diagnosis, decided(result.decisions))
    return sections


def render_checkup(result: Any) -> str:
    sections = checkup_sections(result)
    meta = {k: v for k, v in result.meta.items() if not isinstance(v, (dict, list))}
    meta["models"] = ", ".join(result.meta.get("models", []))
    if result.meta.get("models_skipped"):
        meta["models skipped (time budget)"] = ", ".join(result.meta["models_skipped"])
    return render_html(
        f"vecdoctor checkup: {result.meta.get('dataset')}",
        sections,
        meta=meta,
        subtitle=f"recommended model {result.pipeline.model}",
    )
