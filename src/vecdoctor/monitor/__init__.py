"""Embedding health in production: live health of the served traffic, offline drift reports
against the index baseline, and the migration guard between two pipelines."""

from vecdoctor._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "LiveHealth": "vecdoctor.monitor.live",
        "drift_report": "vecdoctor.monitor.drift",
        "compare_pipelines": "vecdoctor.monitor.migrate",
    },
)
