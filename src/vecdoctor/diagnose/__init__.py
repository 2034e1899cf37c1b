"""Diagnostics of an embedding space on the user's corpus: one module per check."""

from vecdoctor._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "Threshold": "vecdoctor.diagnose._common",
        "Verdict": "vecdoctor.diagnose._common",
        "DiagnosisReport": "vecdoctor.diagnose.run",
        "diagnose": "vecdoctor.diagnose.run",
    },
)
