"""A generic, self-contained HTML report: a list of sections with text, tables and PNG figures.

Any command can build its own :class:`Section` objects (diagnosis checks, evaluation tables,
model comparisons) and render them with :func:`render_html`. All text is HTML-escaped by the
template; figures are embedded as base64 PNG so the file opens without a server.
"""

from __future__ import annotations

import base64
import datetime as _dt
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from vecdoctor.errors import InputError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Figure:
    """One PNG image with a caption."""

    title: str
    png: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.png, bytes) or not self.png.startswith(PNG_MAGIC):
            raise InputError(f"figure {self.title!r}: png must be the bytes of a PNG image")

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


@dataclass(frozen=True)
class Table:
    """A table of plain values; floats are formatted with ``digits`` decimals."""

    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]
    caption: str = ""
    digits: int = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(self.columns))
        object.__setattr__(self, "rows", tuple(tuple(r) for r in self.rows))
        for i, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise InputError(
                    f"table {self.caption or self.columns!r}: row {i} has {len(row)} cells, "
                    f"expected {len(self.columns)}"
                )

    def cell(self, value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, float):
            if value != value:  # NaN
                return "-"
            if abs(value) >= 1000:
                return f"{value:,.0f}"  # rates, sizes: whole numbers read best
            if abs(value) >= 10:
                return f"{value:.1f}"
            if value == 0 or abs(value) >= 1e-3:
                return f"{value:.{self.digits}f}"
            return f"{value:.2e}"
        return str(value)


@dataclass(frozen=True)
class Section:
    """A titled part of a report; ``verdict`` (ok/warn/fail) adds a coloured badge, whose words
    are ``badge`` when given (what failed, not only that something did)."""

    title: str
    paragraphs: Sequence[str] = ()
    tables: Sequence[Table] = ()
    figures: Sequence[Figure] = ()
    verdict: str | None = None
    anchor: str = field(default="")
    badge: str = ""

    def __post_init__(self) -> None:
        for name in ("paragraphs", "tables", "figures"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.anchor:
            slug = re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-") or "section"
            object.__setattr__(self, "anchor", slug)


def render_html(
    title: str,
    sections: Sequence[Section],
    meta: dict[str, Any] | None = None,
    subtitle: str = "",
    template: str = "report.html",
) -> str:
    """Render sections into one self-contained HTML page with the package's jinja2 template."""
    from vecdoctor.errors import require

    jinja2: Any = require("jinja2", "report")
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("vecdoctor.report", "templates"),
        autoescape=jinja2.select_autoescape(["html"], default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    anchors = [s.anchor for s in sections]
    if len(set(anchors)) != len(anchors):
        raise InputError(f"section anchors must be unique, got {anchors}")
    generated = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return env.get_template(template).render(
        title=title,
        subtitle=subtitle,
        sections=list(sections),
        meta={k: v for k, v in (meta or {}).items() if v is not None and v != ""},  # no "split None"
        generated=generated,
    )


def write_report_folder(folder: Any, kind: Any, force: bool, html: str, data: dict[str, Any]
                        ) -> Any:
    """``report.json`` (``data``) and ``report.html`` written together into ``folder``, which is
    replaced only when vecdoctor wrote it as this ``kind`` of output (or with ``force``)."""
    import json

    from vecdoctor.io import atomic_dir
    from vecdoctor.persist import check_output

    folder = check_output(folder, kind, force)
    payload = json.dumps(data, indent=2, allow_nan=False) + "\n"
    with atomic_dir(folder) as tmp:
        (tmp / "report.json").write_text(payload, encoding="utf-8")
        (tmp / "report.html").write_text(html, encoding="utf-8")
    return folder
