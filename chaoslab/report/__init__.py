"""Reports people read and a CI gate pipelines trust.

Every report is built from a run's ``journal.json`` alone (``view.RunView``), so it can
be made later, on another machine:

- ``html``       one self-contained offline HTML page with inline SVG charts
- ``postmortem`` a blameless Markdown postmortem draft
- ``junit``      JUnit XML for CI test views
- ``summary``    Markdown for a CI job summary page
- ``metrics``    Prometheus text exposition file and Pushgateway push
- ``score``, ``baseline``, ``gate``  the resilience gate (``chaoslab gate``)

``write_reports`` is the one call the ``run`` command (or anyone) needs after a run.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def write_reports(
    journal: Mapping[str, Any] | str | Path,
    *,
    html: Path | None = None,
    markdown: Path | None = None,
    junit: Path | None = None,
    summary: Path | None = None,
) -> dict[str, Path]:
    """Render the requested reports from a journal (a dict, or the path of journal.json).

    Returns what was written, by kind. Raises ``view.JournalError`` (an ``InvalidInput``)
    if the journal is unusable.
    """
    # Imported here: ``chaoslab`` imports this package on every start to register commands.
    from chaoslab.report.view import RunView, load_journal

    doc = journal if isinstance(journal, Mapping) else load_journal(journal)
    view = RunView.from_journal(doc)
    written: dict[str, Path] = {}

    def put(kind: str, path: Path | None, text: str) -> None:
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, "utf-8")
        written[kind] = path

    if html is not None:
        from chaoslab.report.html import render_html

        put("html", html, render_html(view))
    if markdown is not None:
        from chaoslab.report.postmortem import render_postmortem

        put("markdown", markdown, render_postmortem(view))
    if summary is not None:
        from chaoslab.report.summary import run_summary

        put("summary", summary, run_summary(view))
    if junit is not None:
        from chaoslab.report.junit import run_junit, write_junit

        write_junit(run_junit(view), junit)
        written["junit"] = junit
    return written


__all__ = ["write_reports"]
