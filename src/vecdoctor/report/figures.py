"""Matplotlib figures rendered to PNG bytes (Agg canvas, no pyplot, no global state).

Every figure is laid out, then its tick labels are measured: x labels that overlap are turned
upright, and any overlap left is reported on the returned :class:`Png` (``crowded``), which the
tests hold at none for the report's figures.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

_COLOURS = ("#0969da", "#cf222e", "#1a7f37", "#8250df", "#9a6700", "#57606a")


class Png(bytes):
    """A rendered figure's PNG bytes; ``crowded`` names tick labels that still overlap after
    layout (``"a / b"`` per pair; empty when every label stands clear), ``covered`` the legends
    drawn over a bar or point of their axes, ``log_x`` the axes with a log-scaled x axis."""

    crowded: tuple[str, ...] = ()
    covered: tuple[str, ...] = ()
    log_x: int = 0


def covered_by_legends(fig: Any) -> tuple[str, ...]:
    """Legends whose drawn box overlaps a bar of their own axes (``fig`` drawn)."""
    renderer = fig.canvas.get_renderer()
    out = []
    for ax in fig.axes:
        legend = ax.get_legend()
        if legend is None:
            continue
        box = legend.get_window_extent(renderer)
        for patch in ax.patches:
            if patch.get_visible() and box.overlaps(patch.get_window_extent(renderer)):
                out.append(f"legend over {patch.get_label() or 'a bar'}")
                break
    return tuple(out)


def crowded_labels(fig: Any, axis_name: str | None = None) -> tuple[str, ...]:
    """Pairs of visible tick labels of one axis whose drawn boxes overlap (``fig`` drawn)."""
    renderer = fig.canvas.get_renderer()
    out = []
    for ax in fig.axes:
        for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            if axis_name not in (None, name):
                continue
            labels = [t for t in axis.get_ticklabels() if t.get_visible() and t.get_text()]
            boxes = [t.get_window_extent(renderer) for t in labels]
            for i in range(len(boxes)):
                for j in range(i + 1, len(boxes)):
                    if boxes[i].overlaps(boxes[j]):
                        out.append(f"{labels[i].get_text()} / {labels[j].get_text()}")
    return tuple(out)


def render(draw: Callable[[Any], None], size: tuple[float, float] = (6.0, 3.6)) -> Png:
    """Create a figure, let ``draw(fig)`` fill it, and return it as PNG bytes; x tick labels
    that overlap are turned upright (and the layout done again) before the image is written."""
    from vecdoctor.errors import require

    require("matplotlib", "report")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    draw(fig)
    fig.canvas.draw()
    if crowded_labels(fig, "x"):
        for ax in fig.axes:
            for label in ax.get_xticklabels():
                label.set_rotation(90)  # upright boxes: what is measured is what is drawn
        fig.canvas.draw()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    png = Png(buf.getvalue())
    png.crowded = crowded_labels(fig)
    png.covered = covered_by_legends(fig)
    png.log_x = sum(ax.get_xscale() == "log" for ax in fig.axes)
    return png


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
    """Token length against raw norm and against cosine to the centroid; lengths on a log axis
    when they span two orders of magnitude or more (one very long text would squash the rest)."""
    positive = [n for n in lengths if n > 0]
    wide = bool(positive) and max(positive) >= 100 * min(positive)

    def draw(fig: Any) -> None:
        left, right = fig.subplots(1, 2)
        if wide:
            left.set_xscale("log")
            right.set_xscale("log")
        left.scatter(lengths, norms, s=4, alpha=0.4, color=_COLOURS[0])
        left.set_xlabel("tokens (log scale)" if wide else "tokens")
        left.set_ylabel("raw vector norm")
        left.set_title(f"Spearman {rho_norm:+.2f}", fontsize=10)
        right.scatter(lengths, centroid, s=4, alpha=0.4, color=_COLOURS[1])
        right.set_xlabel("tokens (log scale)" if wide else "tokens")
        right.set_ylabel("cosine to the corpus centroid")
        right.set_title(f"Spearman {rho_centroid:+.2f}", fontsize=10)

    return render(draw, size=(8.0, 3.4))


_UPRIGHT_LABEL_CHARS = 48
"""Labels whose characters add up to more than this (or more than 6 labels) make a bar chart
horizontal: names then read on the left, one per line, however many there are."""


def bars(
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float]]],
    ylabel: str,
    ylim: tuple[float, float] | None = (0.0, 1.0),
    highlight: str | None = None,
) -> Png:
    """Grouped bar chart: one group per label, one bar per series. Many or long labels turn
    it on its side, in the order given from the top; a single series then has its values
    written at the bars' ends, and the bar of ``highlight`` (a label) stands out."""
    horizontal = len(labels) > 6 or sum(len(str(t)) for t in labels) > _UPRIGHT_LABEL_CHARS
    values = [np.array([np.nan if v is None else v for v in vals], dtype=float) for _, vals in series]

    def draw(fig: Any) -> None:
        ax = fig.add_subplot()
        x = np.arange(len(labels))
        width = 0.8 / max(len(series), 1)
        for i, ((name, _), vals) in enumerate(zip(series, values, strict=True)):
            colours: Any = _COLOURS[i % 6]
            if highlight is not None and len(series) == 1:
                colours = [_COLOURS[1] if t == highlight else _COLOURS[0] for t in labels]
            at = x + (i - (len(series) - 1) / 2) * width
            drawn = (ax.barh(at, vals, width, label=name, color=colours) if horizontal
                     else ax.bar(at, vals, width, label=name, color=colours))
            if horizontal and len(series) == 1:
                ax.bar_label(drawn, labels=["" if np.isnan(v) else f"{v:.4f}" for v in vals],
                             padding=3, fontsize=8)
        if horizontal:
            ax.set_yticks(x, labels)
            ax.invert_yaxis()  # the first label on top, as in the table
            ax.set_xlabel(ylabel)
            if ylim is not None:
                ax.set_xlim(ylim[0], ylim[1] * (1.12 if len(series) == 1 else 1.0))
        else:
            ax.set_xticks(x, labels)
            ax.set_ylabel(ylabel)
            if ylim is not None:
                ax.set_ylim(*ylim)
        if len(series) > 1:  # beside the bars, never over one
            ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))

    height = max(3.0, 0.9 + 0.28 * len(labels) * max(1, len(series) // 2)) if horizontal else 3.6
    return render(draw, size=(6.4 if horizontal else 6.0, height))


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


def fusion_curves(curve: Sequence[dict[str, Any]],
                  labels: tuple[str, str] = ("tuning half", "confirming half")) -> bytes:
    """nDCG@10 against RRF's k (left, log scale) and the dense weight (right), one line for the
    tuning queries and one for the confirming ones (``labels``)."""

    def draw(fig: Any) -> None:
        left, right = fig.subplots(1, 2, sharey=True)
        for ax, fusion, xlabel in ((left, "rrf", "RRF k"), (right, "weighted", "dense weight")):
            points = [c for c in curve if c["fusion"] == fusion]
            x = [c["param"] for c in points]
            for i, (key, label) in enumerate(zip(("tune_ndcg", "confirm_ndcg"), labels,
                                                 strict=True)):
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
