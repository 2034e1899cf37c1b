"""Turn a :class:`~vecdoctor.diagnose.DiagnosisReport` into report sections, HTML and JSON."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vecdoctor.report import figures
from vecdoctor.report.html import Figure, Section, Table, render_html


def summary_section(report: Any, decided: Mapping[str, str] | None = None) -> Section:
    decided = decided or {}
    rows = tuple(
        (r["check"], r["verdict"], r["value"], r["rule"], decided.get(r["check"], r["recommendation"]))
        for r in report.summary()
    )
    table = Table(("check", "verdict", "value", "rule", "recommendation"), rows)
    meta = report.meta
    intro = (
        f"Model {meta['model']} with {meta['pooling']} pooling, {meta['n_sample']} of "
        f"{meta['n_corpus']} texts sampled (seed {meta['seed']})"
        + (f", {meta['n_queries']} queries with judgements." if meta["n_queries"] else ".")
    )
    worst = str(report.worst)
    failing = [r["check"] for r in report.summary() if r["verdict"] == worst]
    badge = f"{worst}: {', '.join(failing)}" if worst != "ok" else "ok"
    return Section("Summary", (intro,), (table,), verdict=worst, badge=badge)


def isotropy_section(report: Any, decided: Mapping[str, str] | None = None) -> Section:
    res = report.isotropy
    s = res.stats
    table = Table(
        ("vectors", "isotropy", "mean cosine", "cosine variance", "top-1 share", "top-5 share",
         "top-10 share", "effective rank"),
        [_space_row("as encoded", s)]
        + [_space_row(f"after {f.name}", f.after) for f in report.fixes],
        caption="Isotropy = (1 - |mean cosine| + min(variance x d, 1)) / 2; 1 = uniform.",
    )
    series = [("as encoded", s.histogram, s.histogram_edges)]
    series += [
        (f"after {f.name}", f.after.histogram, f.after.histogram_edges) for f in report.fixes
    ]
    figs = [
        Figure("Pairwise cosine similarities", figures.cosine_histograms(series)),
        Figure(
            "PCA spectrum (cumulative share of variance)",
            figures.spectra([("as encoded", s.spectrum)]
                            + [(f"after {f.name}", f.after.spectrum) for f in report.fixes]),
        ),
    ]
    if res.layer_mean_cosine:
        figs.append(Figure("Mean pairwise cosine per hidden layer",
                           figures.layer_curve(res.layer_mean_cosine)))
    advice = (decided or {}).get("isotropy", res.recommendation)
    return Section("Isotropy", (advice,), (table,), tuple(figs), str(res.verdict))


def _space_row(label: str, s: Any) -> tuple[Any, ...]:
    return (label, s.isotropy, s.mean_cosine, s.var_cosine, s.top1_share, s.top5_share,
            s.top10_share, s.effective_rank)


def fixes_section(report: Any, decided: Mapping[str, str] | None = None) -> Section | None:
    if not report.fixes:
        return None
    rows = []
    for f in report.fixes:
        rows.append((f.name, f.params.get("n_components"), f.before.isotropy, f.after.isotropy,
                     f.before.mean_cosine, f.after.mean_cosine, f.recall_before, f.recall_after,
                     f.improves))
    k = report.fixes[0].k
    table = Table(
        ("fix", "components", "isotropy before", "isotropy after", "mean cosine before",
         "mean cosine after", f"recall@{k} before", f"recall@{k} after", "improves retrieval"),
        rows,
        caption="Each fix is fitted on the sample and applied to queries and documents alike.",
    )
    advice = ((decided["fixes"],) if decided and "fixes" in decided else
              tuple(f.recommendation for f in report.fixes))
    return Section("Fixes: whitening and all-but-the-top", advice, (table,))


def length_section(report: Any) -> Section:
    res = report.length
    figs = [Figure("Token length against raw norm and centroid similarity",
                   figures.length_scatter(res.lengths, res.norms, res.centroid_cosines,
                                          res.spearman_norm, res.spearman_centroid))]
    tables = [Table(("measure", "Spearman rho"),
                    (("length vs raw norm", res.spearman_norm),
                     ("length vs cosine to centroid", res.spearman_centroid)))]
    q = res.quartiles
    if q is not None:
        labels = [f"Q{i + 1}: {q.edges[i]:.0f}-{q.edges[i + 1]:.0f}" for i in range(4)]
        tables.append(Table(
            ("document length quartile (tokens)", f"recall@{q.k}", "relevant pairs"),
            list(zip(labels, q.recall, q.pairs, strict=True)),
            caption=f"{q.n_queries} queries searched over {q.n_documents} documents "
                    "(the sample plus every relevant document).",
        ))
        figs.append(Figure(f"recall@{q.k} by document length quartile",
                           figures.bars(labels, [(f"recall@{q.k}", q.recall)], f"recall@{q.k}")))
    return Section("Length bias", (res.recommendation,), tuple(tables), tuple(figs),
                   str(res.verdict))


def truncation_section(report: Any, decided: Mapping[str, str] | None = None) -> Section:
    res = report.truncation
    p = res.percentiles
    table = Table(
        ("texts", "max length", "share over the limit", "share of tokens dropped",
         "mean tokens", "p50", "p90", "p95", "p99", "longest"),
        [(res.n, res.max_length, res.share_truncated, res.share_tokens_dropped, res.mean_tokens,
          *p, res.longest)],
    )
    advice = (decided or {}).get("truncation", res.recommendation)
    return Section("Truncation", (advice,), (table,), verdict=str(res.verdict))


def vocabulary_section(report: Any) -> Section:
    res = report.vocabulary
    if res is None:
        reason = report.meta.get("skipped", {}).get("vocabulary", "not measured")
        return Section("Vocabulary fragmentation", (f"Skipped: {reason}",))
    stats = Table(
        ("texts", "words", "distinct words", "sub-tokens per word",
         f"share of words in >= {res.min_pieces} pieces"),
        [(res.n_texts, res.n_words, res.n_unique, res.fertility, res.fragmented_share)],
    )
    terms = Table(
        ("word", "occurrences", "pieces", "sub-tokens"),
        [(t.word, t.count, len(t.pieces), " ".join(t.pieces)) for t in res.terms],
        caption="Frequent words (stopwords ignored) ranked by occurrences x (pieces - 1).",
    )
    return Section("Vocabulary fragmentation", (res.recommendation,), (stats, terms),
                   verdict=str(res.verdict))


def position_section(report: Any) -> Section | None:
    res = report.position
    if res is None:
        reason = report.meta.get("skipped", {}).get("position", "not measured")
        return Section("Positional bias of the first token", (f"Skipped: {reason}",))
    table = Table(
        ("positions", "attention share", "position share"),
        list(zip(res.buckets, res.attention_share, res.position_share, strict=True)),
        caption=f"Last-layer attention from the first token, mean of heads, over {res.n} texts.",
    )
    fig = Figure("Attention from the first token by position bucket",
                 figures.bars(res.buckets, [("attention share", res.attention_share),
                                            ("position share", res.position_share)], "share"))
    return Section("Positional bias of the first token", (res.recommendation,), (table,),
                   (fig,), str(res.verdict))


def quantization_section(report: Any, decided: Mapping[str, str] | None = None) -> Section:
    res = report.quantization
    table = Table(
        ("scheme", "bytes / vector", "compression", "MSE", "mean cosine",
         f"recall@{res.k} overlap", f"overlap with {res.oversample}x rescoring", "note"),
        [(r.name, r.bytes_per_vector, r.compression, r.mse, r.mean_cosine, r.recall_overlap,
          r.rescored_overlap, r.note) for r in res.rows],
        caption=(f"{res.n_queries} {'corpus texts' if res.queries_from_corpus else 'queries'} "
                 f"searched over {res.n_documents} documents; overlap = share of the exact float "
                 f"top-{res.k} found."),
        digits=4,
    )
    names = [r.name for r in res.rows]
    fig = Figure(f"recall@{res.k} overlap with float search",
                 figures.bars(names, [("plain", [r.recall_overlap for r in res.rows]),
                                      ("rescored", [r.rescored_overlap for r in res.rows])],
                              "overlap"))
    advice = (decided or {}).get("quantization", res.recommendation)
    return Section("Quantization error", (advice,), (table,), (fig,), str(res.verdict))


def diagnosis_sections(report: Any, decided: Mapping[str, str] | None = None) -> list[Section]:
    """Every section of the diagnosis report, in reading order. ``decided`` (check -> words):
    the checkup's own verdict, which replaces the diagnosis' advice for that check, so that a
    checkup report gives one verdict per topic."""
    sections = [
        summary_section(report, decided),
        isotropy_section(report, decided),
        fixes_section(report, decided),
        length_section(report),
        truncation_section(report, decided),
        vocabulary_section(report),
        position_section(report),
        quantization_section(report, decided),
    ]
    return [s for s in sections if s is not None]


def render_diagnosis(report: Any) -> str:
    meta = {k: v for k, v in report.meta.items() if not isinstance(v, dict)}
    meta.update({f"time {k} (s)": v for k, v in report.meta.get("timings_s", {}).items()})
    title = f"vecdoctor diagnosis: {report.meta.get('dataset') or 'corpus'}"
    subtitle = f"{report.meta['model']} · {report.meta['pooling']} pooling"
    return render_html(title, diagnosis_sections(report), meta=meta, subtitle=subtitle)


def write_report(report: Any, folder: str | Path, force: bool = False) -> Path:
    """Write report.json and report.html; ``folder`` is replaced only once both are complete,
    and only when it holds a diagnosis report (or with ``force``)."""
    from vecdoctor.persist import DIAGNOSIS
    from vecdoctor.report.html import write_report_folder

    return Path(write_report_folder(folder, DIAGNOSIS, force, render_diagnosis(report),
                                    report.to_dict()))
