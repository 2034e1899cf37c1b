"""Reports: a generic HTML renderer (sections, tables, PNG figures) and the diagnosis report."""

from vecdoctor.report.html import Figure, Section, Table, render_html

__all__ = ["Figure", "Section", "Table", "render_html"]
