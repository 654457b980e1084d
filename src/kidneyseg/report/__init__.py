"""The clinical case report: measurements, plausibility checks, staging and nephrometry, as JSON
and a self-contained HTML page."""

from kidneyseg.report.checks import ReportOptions
from kidneyseg.report.measure import measure
from kidneyseg.report.render import ReportPaths, write_report

__all__ = ["ReportOptions", "ReportPaths", "measure", "write_report"]
