"""Diagnostics of an embedding space on the user's corpus: one module per check."""

from vecdoctor.diagnose._common import Threshold, Verdict
from vecdoctor.diagnose.run import DiagnosisReport, diagnose

__all__ = ["DiagnosisReport", "Threshold", "Verdict", "diagnose"]
