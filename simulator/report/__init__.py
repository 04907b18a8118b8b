"""The simulator's reports: report.json, the decisions file, the comparison table, the HTML page.

`summary` computes the numbers (report.json) and writes decisions.jsonl; `page`
draws the HTML report from a `ReportInput` (data), with the charts in `charts`,
`fleet` and `compare`, the shared look in `style` and number formats in `fmt`.
"""

from simulator.report.data import ReportInput
from simulator.report.page import html_report
from simulator.report.summary import summarize, table, write_decisions

__all__ = ["ReportInput", "html_report", "summarize", "table", "write_decisions"]
