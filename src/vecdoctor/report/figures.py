"""Matplotlib figures rendered to PNG bytes (Agg canvas, no pyplot, no global state)."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

_COLOURS = ("#0969da", "#cf222e", "#1a7f37", "#8250df", "#9a6700", "#57606a")


def render(draw: Callable[[Any], None], size: tuple[float, float] = (6.0, 3.6)) -> bytes:
    """Create a figure, let ``draw(fig)`` fill it, and return it as PNG bytes."""
    from vecdoctor.errors import require

    require("matplotlib", "report")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    draw(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def cosine_histograms(series: Sequence[tuple[str, Sequence[int], Sequence[float]]]) -> bytes:
    """Overlaid histograms of pairwise cosines: (label, counts, bin edges) per series."""

    def draw(fig: Any) -> None:
        ax = fig.add_subplot()
        for i, (label, counts, edges) in enumerate(series):
            c = np.asarray(counts, dtype=float)
            share = c / c.sum() if c.sum() else c
            ax.stairs(share, np.asarray(edges), label=label, color=_COLOURS[i % 6], linewidth=1.5)
        ax.set_xlabel("cosine similarity between two texts")
        ax.set_ylabel("share of pairs")
        ax.legend(frameon=False)

    return render(draw)


def spectra(series: Sequence[tuple[str, Sequence[float]]], top: int = 50) -> bytes:
    """Cumulative share of variance of the top principal components, one line per series."""

    def draw(fig: Any) -> None:
        ax = fig.add_subplot()
        for i, (label, shares) in enumerate(series):
            cum = np.cumsum(np.asarray(shares, dtype=float))[:top]
            ax.plot(np.arange(1, len(cum) + 1), cum, label=label, color=_COLOURS[i % 6])
        ax.set_xlabel("number of principal components")
        ax.set_ylabel("cumulative share of variance")
        ax.set_ylim(0, 1.02)
        ax.legend(frameon=False)

    return render(draw)


def layer_curve(values: Sequence[float]) -> bytes:
    """Mean pairwise cosine per hidden layer (0 = embedding layer)."""

    def draw(fig: Any) -> None:
        ax = fig.add_subplot()
        ax.plot(range(len(values)), values, marker="o", color=_COLOURS[0])
        ax.set_xlabel("layer (0 = embeddings)")
        ax.set_ylabel("mean pairwise cosine")
        ax.set_xticks(range(len(values)))
        ax.set_ylim(min(0.0, min(values) - 0.05), 1.0)

    return render(draw)


def length_scatter(
    lengths: Sequence[int], norms: Sequence[float], centroid: Sequence[float],
    rho_norm: float, rho_centroid: float,
) -> bytes:
    """Token length against raw norm and against cosine to the centroid."""

    def draw(fig: Any) -> None:
        left, right = fig.subplots(1, 2)
        left.scatter(lengths, norms, s=4, alpha=0.4, color=_COLOURS[0])
        left.set_xlabel("tokens")
        left.set_ylabel("raw vector norm")
        left.set_title(f"Spearman {rho_norm:+.2f}", fontsize=10)
        right.scatter(lengths, centroid, s=4, alpha=0.4, color=_COLOURS[1])
        right.set_xlabel("tokens")
        right.set_ylabel("cosine to the corpus centroid")
        right.set_title(f"Spearman {rho_centroid:+.2f}", fontsize=10)

    return render(draw, size=(8.0, 3.4))


def bars(
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float]]],
    ylabel: str,
    ylim: tuple[float, float] | None = (0.0, 1.0),
) -> bytes:
    """Grouped bar chart: one group per label, one bar per series."""

    def draw(fig: Any) -> None:
        ax = fig.add_subplot()
        x = np.arange(len(labels))
        width = 0.8 / max(len(series), 1)
        for i, (name, values) in enumerate(series):
            vals = np.array([np.nan if v is None else v for v in values], dtype=float)
            ax.bar(x + (i - (len(series) - 1) / 2) * width, vals, width, label=name,
                   color=_COLOURS[i % 6])
        ax.set_xticks(x, labels)
        ax.set_ylabel(ylabel)
        if ylim is not None:
            ax.set_ylim(*ylim)
        if len(series) > 1:
            ax.legend(frameon=False, loc="best")

    return render(draw)


def distributions(
    series: Sequence[tuple[str, Sequence[float]]], xlabel: str,
    marks: Sequence[tuple[str, float]] = (), bins: int = 40,
) -> bytes:
    """Overlaid histograms (share of each series per bin) and labelled vertical lines."""

    def draw(fig: Any) -> None:
        ax = fig.add_subplot()
        values = [np.asarray(v, dtype=float) for _, v in series]
        joined = np.concatenate([v for v in values if v.size] or [np.zeros(1)])
        edges = np.histogram_bin_edges(joined, bins=bins)
        for i, ((label, _), v) in enumerate(zip(series, values, strict=True)):
            counts, _ = np.histogram(v, bins=edges)
            share = counts / max(counts.sum(), 1)
            ax.stairs(share, edges, label=f"{label} (n={v.size})", color=_COLOURS[i % 6],
                      linewidth=1.5)
        for j, (label, x) in enumerate(marks):
            ax.axvline(x, color=_COLOURS[(len(series) + j) % 6], linestyle="--", linewidth=1,
                       label=label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("share of texts")
        ax.legend(frameon=False, fontsize=8)

    return render(draw)


def projection(series: Sequence[tuple[str, np.ndarray]]) -> bytes:
    """The rows of every series projected on the first two principal components of all of them."""

    def draw(fig: Any) -> None:
        ax = fig.add_subplot()
        stacked = np.vstack([np.asarray(v, dtype=float) for _, v in series])
        centred = stacked - stacked.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        start = 0
        for i, (label, v) in enumerate(series):
            xy = centred[start : start + len(v)] @ vt[:2].T
            start += len(v)
            ax.scatter(xy[:, 0], xy[:, 1], s=5, alpha=0.45, color=_COLOURS[i % 6], label=label)
        ax.set_xlabel("principal component 1")
        ax.set_ylabel("principal component 2")
        ax.legend(frameon=False, markerscale=3)

    return render(draw, size=(5.6, 4.2))


def paired_scatter(a: Sequence[float], b: Sequence[float], xlabel: str, ylabel: str) -> bytes:
    """One point per item, ``a`` against ``b``, with the diagonal (no change)."""

    def draw(fig: Any) -> None:
        ax = fig.add_subplot()
        x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        jitter = np.random.default_rng(0).uniform(-0.01, 0.01, size=(2, len(x)))
        ax.scatter(x + jitter[0], y + jitter[1], s=8, alpha=0.5, color=_COLOURS[0])
        low, high = float(min(x.min(initial=0), y.min(initial=0))), float(max(x.max(initial=1), y.max(initial=1)))
        ax.plot([low, high], [low, high], color=_COLOURS[5], linewidth=1, linestyle="--")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_aspect("equal")

    return render(draw, size=(4.4, 4.2))


def fusion_curves(curve: Sequence[dict[str, Any]]) -> bytes:
    """nDCG@10 against RRF's k (left, log scale) and the dense weight (right), one line per
    half of the queries."""

    def draw(fig: Any) -> None:
        left, right = fig.subplots(1, 2, sharey=True)
        for ax, fusion, xlabel in ((left, "rrf", "RRF k"), (right, "weighted", "dense weight")):
            points = [c for c in curve if c["fusion"] == fusion]
            x = [c["param"] for c in points]
            for i, (key, label) in enumerate((("tune_ndcg", "tuning half"),
                                              ("confirm_ndcg", "confirming half"))):
                ax.plot(x, [c[key] for c in points], marker="o", markersize=3,
                        color=_COLOURS[i], label=label)
            if fusion == "rrf":
                ax.set_xscale("log")
            ax.set_xlabel(xlabel)
        left.set_ylabel("nDCG@10")
        left.legend(frameon=False, fontsize=8)

    return render(draw, size=(8.0, 3.4))


def depth_curve(curve: Sequence[dict[str, Any]]) -> bytes:
    """nDCG@10 (left axis) and reranking milliseconds per query (right axis) per depth."""

    def draw(fig: Any) -> None:
        ax = fig.add_subplot()
        depths = [c["depth"] for c in curve]
        ax.plot(depths, [c["ndcg@10"] for c in curve], marker="o", color=_COLOURS[0])
        ax.set_xlabel("candidates reranked")
        ax.set_ylabel("nDCG@10", color=_COLOURS[0])
        right = ax.twinx()
        right.plot(depths, [c["ms_per_query"] or 0 for c in curve], marker="s",
                   color=_COLOURS[1], linestyle="--")
        right.set_ylabel("ms per query", color=_COLOURS[1])

    return render(draw)
