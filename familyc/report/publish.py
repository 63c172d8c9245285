"""A report's files: one result, every rendering, written together into one folder.

    FOLDER/report.json  report.md  report.html  report.txt   the same report four ways
    FOLDER/*.png                                              its plots (matplotlib, with the train extra)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from familyc import render
from familyc.files import atomic_write
from familyc.report.collect import RunReport
from familyc.report.verdict import judge
from familyc.report.view import markdown_with_plots, render_html, report_document


@dataclass(frozen=True, kw_only=True, slots=True)
class PublishedReport:
    document: render.Document
    json: str
    markdown: str
    html: str
    plots: dict[str, Path]


def publish(report: RunReport, folder: Path) -> PublishedReport:
    """Render `report` (with its plots) and write every rendering into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    plots = _plots(report, folder)
    doc = report_document(report, plots=plots)
    published = PublishedReport(document=doc, json=json.dumps(report.to_data(), indent=2) + "\n",
                                markdown=markdown_with_plots(render.render_markdown(doc), plots),
                                html=render_html(report_document(report), plots, judge(report)), plots=plots)
    for name, text in (("report.json", published.json), ("report.md", published.markdown),
                       ("report.html", published.html), ("report.txt", render.text(doc))):
        atomic_write(folder / name, text)
    return published


def _plots(report: RunReport, folder: Path) -> dict[str, Path]:
    try:
        from familyc.report.plots import write_plots
    except ImportError:  # matplotlib comes with the train extra
        return {}
    return write_plots(report, folder)
