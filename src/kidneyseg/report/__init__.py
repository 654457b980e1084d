"""The clinical case report: kidney and lesion measurements, JSON and a self-contained HTML page."""

from kidneyseg.report.measure import measure
from kidneyseg.report.render import ReportPaths, write_report

__all__ = ["ReportPaths", "measure", "write_report"]
