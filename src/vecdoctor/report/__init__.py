"""Reports: a generic HTML renderer (sections, tables, PNG figures) and the diagnosis report."""

from vecdoctor._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "Figure": "vecdoctor.report.html",
        "Section": "vecdoctor.report.html",
        "Table": "vecdoctor.report.html",
        "render_html": "vecdoctor.report.html",
    },
)
