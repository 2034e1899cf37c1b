"""The checkup: compare models, diagnose the chosen one, evaluate variants, recommend a
:class:`~vecdoctor.pipeline.Pipeline` in which every choice is backed by a measured gain."""

from vecdoctor._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "checkup": "vecdoctor.checkup.run",
        "CheckupResult": "vecdoctor.checkup.writing",
        "write_checkup": "vecdoctor.checkup.writing",
        "decide": "vecdoctor.checkup.rules",
    },
)
