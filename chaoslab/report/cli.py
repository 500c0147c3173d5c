"""``chaoslab report``: added to the main command by ``register``.

Heavy imports stay inside the command functions: ``chaoslab run``'s start-up time is
benchmarked, and it imports this module to register the commands.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from chaoslab.clitypes import OutputFile
from chaoslab.verdict import ExitCode


def console_err() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def exit_invalid(problems: Any, exit_code: int = ExitCode.INVALID_INPUT) -> NoReturn:
    from rich.markup import escape

    console = console_err()
    problems = list(problems) or ["invalid input"]
    console.print(f"[bold red]invalid input[/] ({len(problems)} problem{'s' if len(problems) > 1 else ''}):")
    for p in problems:
        console.print(f"  • {escape(str(p))}")
    sys.exit(exit_code)


def _journal_path(arg: str) -> Path:
    p = Path(arg)
    return p / "journal.json" if p.is_dir() else p


def write_metrics(
    runs: Any,
    gate: Any,
    metrics_file: str | None,
    pushgateway: str | None,
    job: str,
    grouping: dict[str, str],
) -> None:
    from chaoslab.report.metrics import MetricsError, build_registry, push, write_metrics_file

    if not metrics_file and not pushgateway:
        return
    try:
        registry = build_registry(runs, gate)
        if metrics_file:
            write_metrics_file(Path(metrics_file), registry)
            console_err().print(f"metrics: {metrics_file}")
        if pushgateway:
            push(pushgateway, registry, job=job, grouping_key=grouping)
            console_err().print(f"metrics pushed to {pushgateway}")
    except MetricsError as exc:
        console_err().print(f"[red]metrics:[/] {exc}")
        raise


def register(main: click.Group) -> None:
    """Add ``report`` to the ``chaoslab`` command group."""

    @main.command("report")
    @click.argument("journal", type=click.Path(readable=False))
    @click.option("--html", "html_path", type=OutputFile(), help="Self-contained HTML report.")
    @click.option("--markdown", type=OutputFile(), help="Blameless postmortem draft (Markdown).")
    @click.option("--junit", type=OutputFile(), help="JUnit XML.")
    @click.option(
        "--summary",
        type=OutputFile(),
        help='Markdown for a CI job summary (e.g. "$GITHUB_STEP_SUMMARY").',
    )
    @click.option(
        "--metrics-file",
        type=OutputFile(),
        help="Prometheus text exposition file (node_exporter textfile collector).",
    )
    @click.option(
        "--pushgateway", metavar="URL", help="Push the run's metrics to this Prometheus Pushgateway."
    )
    def report(
        journal: str,
        html_path: str | None,
        markdown: str | None,
        junit: str | None,
        summary: str | None,
        metrics_file: str | None,
        pushgateway: str | None,
    ) -> None:
        """Render reports from a run's journal.json (or its run directory), on any machine.

        A run directory with only events.ndjson (the run was SIGKILLed) is judged from its
        events: NOT CLEAN when a fault was never verified clean, interrupted otherwise.

        With no output option, writes report.html and postmortem.md next to the journal.
        Exit 0 when written, 2 if the journal is unusable, 5 if metrics cannot be pushed.
        """
        from chaoslab.errors import InvalidInput
        from chaoslab.report import write_reports
        from chaoslab.report.metrics import MetricsError
        from chaoslab.report.view import RunView, load_run

        path = _journal_path(journal)
        try:
            doc = load_run(journal)
            outputs = {"html": html_path, "markdown": markdown, "junit": junit, "summary": summary}
            if not any(outputs.values()) and not metrics_file and not pushgateway:
                outputs = {
                    "html": str(path.parent / "report.html"),
                    "markdown": str(path.parent / "postmortem.md"),
                }
            written = write_reports(doc, **{k: Path(v) for k, v in outputs.items() if v})
        except InvalidInput as exc:
            exit_invalid(exc.problems)
        for kind, p in written.items():
            click.echo(f"{kind}: {p}")
        view = RunView.from_journal(doc)
        try:
            write_metrics(
                [(view.title, view)], None, metrics_file, pushgateway, "chaoslab", {"experiment": view.title}
            )
        except MetricsError:
            sys.exit(ExitCode.ERROR)
