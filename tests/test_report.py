"""HTML/JSON report: every section present, figures are valid PNGs, numbers match, atomic writes."""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pytest

from vecdoctor.diagnose.fixes import RetrievalSet, evaluate_fixes
from vecdoctor.diagnose.isotropy import check_isotropy
from vecdoctor.diagnose.length import check_length, recall_by_length_quartile
from vecdoctor.diagnose.position import check_position
from vecdoctor.diagnose.quantization import check_quantization
from vecdoctor.diagnose.run import DiagnosisReport
from vecdoctor.diagnose.truncation import check_truncation
from vecdoctor.diagnose.vocabulary import check_vocabulary
from vecdoctor.errors import InputError
from vecdoctor.report import Figure, Section, Table, render_html
from vecdoctor.report.diagnosis import write_report

SECTIONS = (
    "Summary",
    "Isotropy",
    "Fixes: whitening and all-but-the-top",
    "Length bias",
    "Truncation",
    "Vocabulary fragmentation",
    "Positional bias of the first token",
    "Quantization error",
)


@pytest.fixture(scope="module")
def report(minilm_path, real_corpus):
    """A report assembled from the check functions on real texts and constructed vectors."""
    from tokenizers import Tokenizer

    rng = np.random.default_rng(0)
    n, d = 300, 24
    raw = rng.normal(size=(n, d)) + 2.0
    vectors = (raw / np.linalg.norm(raw, axis=1, keepdims=True)).astype(np.float32)
    lengths = rng.integers(20, 600, size=n)
    queries = vectors[:20] + 0.05 * rng.normal(size=(20, d)).astype(np.float32)
    relevant = tuple((i,) for i in range(20))
    retrieval = RetrievalSet(queries, vectors, relevant)
    tokenizer = Tokenizer.from_file(str(minilm_path / "tokenizer.json"))
    iso = check_isotropy(vectors, layer_vectors=np.stack([vectors, raw.astype(np.float32)]))
    meta = {
        "model": "toy",
        "pooling": "cls",
        "n_sample": n,
        "n_corpus": n,
        "seed": 0,
        "n_queries": 20,
        "dataset": "toy",
        "timings_s": {"all": 1.0},
        "skipped": {},
    }
    return DiagnosisReport(
        meta=meta,
        isotropy=iso,
        length=check_length(
            lengths, raw, recall_by_length_quartile(queries, vectors, lengths, relevant)
        ),
        truncation=check_truncation(lengths, 256),
        vocabulary=check_vocabulary([doc.content for doc in real_corpus[:40]], tokenizer),
        position=check_position([rng.dirichlet(np.ones(m)) for m in (30, 200)], pooling="cls"),
        quantization=check_quantization(vectors, queries),
        fixes=evaluate_fixes(vectors, ("whitening", "abtt"), retrieval, before=iso.stats),
    )


def _pngs(html: str) -> list[bytes]:
    return [
        base64.b64decode(b) for b in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)
    ]


def test_html_report_has_every_section_and_valid_pngs(tmp_path, report):
    from matplotlib.image import imread

    write_report(report, tmp_path / "out")
    html = (tmp_path / "out" / "report.html").read_text()
    for title in SECTIONS:
        assert f">{title}" in html, title
    pngs = _pngs(html)
    # histogram, spectrum, layers, length scatter, quartile recall, position, quantization
    assert len(pngs) == 7
    for png in pngs:
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        image = imread(io.BytesIO(png), format="png")
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert report.vocabulary.terms[0].word in html


def test_json_report_holds_the_same_numbers(tmp_path, report):
    write_report(report, tmp_path / "out")
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert data["isotropy"]["stats"]["mean_cosine"] == pytest.approx(
        report.isotropy.stats.mean_cosine
    )
    assert data["quantization"]["rows"][1]["recall_overlap"] == pytest.approx(
        report.quantization.row("int8").recall_overlap
    )
    assert [r["check"] for r in data["summary"]] == [name for name, _ in report.checks()]
    assert data["fixes"][0]["after"]["isotropy"] == pytest.approx(report.fixes[0].after.isotropy)
    assert data["isotropy"]["threshold"]["rule"] == "mean pairwise cosine > 0.6 warns, > 0.8 fails"


def test_failed_write_leaves_the_previous_report(tmp_path, report, monkeypatch):
    out = tmp_path / "out"
    write_report(report, out)
    before = (out / "report.json").read_bytes()
    import vecdoctor.report.diagnosis as diagnosis

    def broken(_report):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(diagnosis, "render_diagnosis", broken)
    with pytest.raises(RuntimeError):
        write_report(report, out)
    assert (out / "report.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_refuses_to_replace_an_unrelated_folder(tmp_path, report):
    precious = tmp_path / "docs"
    precious.mkdir()
    (precious / "thesis.tex").write_text("keep me")
    with pytest.raises(InputError, match="not a vecdoctor diagnosis report"):
        write_report(report, precious)
    assert (precious / "thesis.tex").read_text() == "keep me"


def test_generic_sections_escape_text_and_embed_figures():
    from vecdoctor.report import figures

    png = figures.bars(["a", "b"], [("x", [0.2, 0.7])], "share")
    sections = [
        Section(
            "Evaluation",
            ("<script>alert(1)</script>",),
            (Table(("variant", "ndcg@10"), [("dense", 0.61234), ("hybrid", None)]),),
            (Figure("bars", png),),
            verdict="ok",
        ),
        Section("Models", ("compare",)),
    ]
    html = render_html("checkup", sections, meta={"k": "v"})
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
    assert "0.612" in html and 'id="evaluation"' in html and 'id="models"' in html
    assert _pngs(html) == [png]
    with pytest.raises(InputError, match="unique"):
        render_html("x", [Section("A"), Section("A")])
    with pytest.raises(InputError, match="PNG"):
        Figure("not a png", b"GIF89a")
    with pytest.raises(InputError, match="cells"):
        Table(("a", "b"), [(1,)])


VARIANT_NAMES = ["bm25", "dense", "hybrid", "hybrid-weighted", "dense+window-max", "dense+window-mean",
                 "dense+chunks", "dense+chunks-first", "hybrid+chunks", "hybrid+chunks-first",
                 "dense+whiten", "dense+whiten-k", "dense+abtt", "int8", "binary", "hybrid+rerank"]


def test_bar_charts_keep_every_label_readable():
    """The checkup's variant chart (16 names) and a few short labels: no tick labels overlap
    once drawn; many names turn the chart on its side, in the order given, values written."""
    from vecdoctor.report import figures

    many = figures.bars(VARIANT_NAMES, [("nDCG@10", np.linspace(0.4, 0.72, 16))], "nDCG@10",
                        highlight="hybrid")
    few = figures.bars(["a", "b"], [("x", [0.2, 0.7])], "share")
    grouped = figures.bars(["head", "middle", "tail"], [("plain", [0.3, 0.5, 0.2]),
                                                        ("windows", [0.4, 0.4, 0.2])], "share")
    for png in (many, few, grouped):
        assert png.startswith(b"\x89PNG") and png.crowded == ()
    assert _png_size(many)[1] > _png_size(few)[1]  # one line per name: a taller figure


def test_crowded_labels_are_turned_and_what_still_overlaps_is_reported():
    """The guard measures labels: 40 long labels on a small axis overlap even when turned upright,
    and the figure says which; at a readable count, turned upright, they do not."""
    from vecdoctor.report import figures

    def axis_of(n):
        def draw(fig):
            ax = fig.add_subplot()
            ax.plot(range(n), range(n))
            ax.set_xticks(range(n), [f"a rather long label {i}" for i in range(n)])
        return draw

    assert len(figures.render(axis_of(40), size=(4.0, 3.0)).crowded) > 10
    assert figures.render(axis_of(8), size=(8.0, 4.0)).crowded == ()


def _png_size(png):
    import struct

    return struct.unpack(">II", png[16:24])


def test_figures_and_tables_a_person_can_read():
    from vecdoctor.report import figures
    from vecdoctor.report.html import Table

    # two series on a 0-1 scale (the quantization chart): the legend stands beside the bars
    quant = figures.bars(["float32", "int8", "binary", "pq"],
                         [("plain", [1.0, 0.99, 0.91, 0.72]), ("rescored", [None, 1.0, 0.99, 0.95])],
                         "overlap")
    assert quant.covered == () and quant.crowded == ()
    # one text of 72,776 tokens among hundreds of 100-300: lengths on a log axis
    rng = np.random.default_rng(0)
    lengths = [*rng.integers(100, 300, 300).tolist(), 72_776]
    wide = figures.length_scatter(lengths, rng.random(301), rng.random(301), 0.1, -0.2)
    assert wide.log_x == 2
    narrow = figures.length_scatter(lengths[:-1], rng.random(300), rng.random(300), 0.1, -0.2)
    assert narrow.log_x == 0
    table = Table(("docs/s", "nDCG@10", "bytes"), [(53.6245, 0.71623, 1536.0)], digits=4)
    assert [table.cell(v) for v in table.rows[0]] == ["53.6", "0.7162", "1,536"]
