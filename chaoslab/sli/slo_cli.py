"""``chaoslab slo status | rules``.

Exit codes: 0 done; 2 (invalid input) for a broken SLO file, with every problem and
its file, line and field, and for ``rules`` when the files hold no SLO the rules can
express (never ``groups: []`` with exit 0); 5 (error) when Prometheus cannot answer or
the data is missing or stale — reported per SLO, never as a healthy budget.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click

from chaoslab.clitypes import OutputFile

SCRAPE_HELP = (
    "Prometheus's scrape interval for the SLI's series: no burn window is shorter than "
    "4 scrapes (shorter ones are widened, with a warning) [default: 1m, Prometheus's default]."
)


def _scrape_option[F: Callable[..., Any]](f: F) -> F:
    from chaoslab.clitypes import Duration

    return click.option(
        "--scrape-interval",
        "scrape_interval_s",
        type=Duration(positive=True, max_s=86400.0),
        default=60.0,
        help=SCRAPE_HELP,
    )(f)


def _windows_option[F: Callable[..., Any]](f: F) -> F:
    return click.option(
        "--windows",
        "windows_files",
        multiple=True,
        type=click.Path(dir_okay=False, readable=False),
        help="Sloth AlertWindows file (apiVersion sloth.slok.dev/v1) with the burn windows of an SLO "
        "period, as sloth --slo-period-windows-path takes; repeatable.",
    )(f)


def _load_windows(files: tuple[str, ...]) -> Any:
    from chaoslab.errors import InvalidInput
    from chaoslab.sli.alertwindows import load_alert_windows
    from chaoslab.verdict import ExitCode

    try:
        return load_alert_windows(files)
    except InvalidInput as exc:
        for p in exc.problems:
            click.echo(f"error: {p}", err=True)
        sys.exit(int(ExitCode.INVALID_INPUT))


def register(main: click.Group) -> None:
    @main.group()
    def slo() -> None:
        """SLO files (OpenSLO v1 or concise): error budgets, burn rates, alert rules."""

    @slo.command()
    @click.argument("slo_files", nargs=-1, required=True, type=click.Path(dir_okay=False, readable=False))
    @click.option(
        "--prometheus",
        "url",
        envvar="CHAOSLAB_PROMETHEUS_URL",
        default=None,
        help="Prometheus base URL (default: the SLO file's data source).",
    )
    @click.option(
        "--output",
        type=click.Choice(["text", "json"]),
        default="text",
        help="text for people; json prints one machine-readable document on stdout.",
    )
    @_scrape_option
    @_windows_option
    def status(
        slo_files: tuple[str, ...],
        url: str | None,
        output: str,
        scrape_interval_s: float,
        windows_files: tuple[str, ...],
    ) -> None:
        """Per SLO: SLI over its window, budget remaining, burn rates, firing alert pairs."""
        from chaoslab.errors import InvalidInput, SLIError
        from chaoslab.model.openslo import load_slo_files
        from chaoslab.sli.budget import budget_status, format_statuses
        from chaoslab.sli.prometheus import PrometheusClient, PrometheusSLI
        from chaoslab.verdict import ExitCode

        try:
            slos = load_slo_files(slo_files)
        except InvalidInput as exc:
            for p in exc.problems:
                click.echo(f"error: {p}", err=True)
            sys.exit(int(ExitCode.INVALID_INPUT))
        if not slos:
            click.echo(
                "error: the files hold no SLO (only other OpenSLO objects): no budget to show", err=True
            )
            sys.exit(int(ExitCode.INVALID_INPUT))
        custom = _load_windows(windows_files)
        results = []
        failures = []
        for definition in slos:
            target = url or definition.prometheus_url
            if not target:
                failures.append(f"{definition.name}: no Prometheus URL (give --prometheus)")
                continue
            try:
                with PrometheusClient(target) as client:
                    results.append(
                        budget_status(PrometheusSLI(client, definition), None, scrape_interval_s, custom)
                    )
            except SLIError as exc:
                failures.append(str(exc))
        if output == "json":
            click.echo(json.dumps({"slos": [r.to_dict() for r in results], "errors": failures}, indent=2))
        else:
            if results:
                click.echo(format_statuses(results))
            for f in failures:
                click.echo(f"error: {f}", err=True)
        sys.exit(int(ExitCode.ERROR) if failures else 0)

    @slo.command()
    @click.argument("slo_files", nargs=-1, required=True, type=click.Path(dir_okay=False, readable=False))
    @click.option(
        "--out-file",
        "out",
        type=OutputFile(),
        default=None,
        help="Write the rule file here [default: stdout].",
    )
    @click.option(
        "-o",
        "--output",
        "legacy_out",
        type=OutputFile(),
        default=None,
        hidden=True,
        help="Deprecated spelling of --out-file (--output is a format option in every other command).",
    )
    @click.option(
        "--format",
        "rules_format",
        type=click.Choice(["chaoslab", "sloth"]),
        default="chaoslab",
        show_default=True,
        help="Rule shape: chaoslab's (one group per SLO, one alert per pair) or Sloth's "
        "(its recording rules, sloth_* labels, one page and one ticket alert per SLO).",
    )
    @_scrape_option
    @_windows_option
    def rules(
        slo_files: tuple[str, ...],
        out: str | None,
        legacy_out: str | None,
        scrape_interval_s: float,
        rules_format: str,
        windows_files: tuple[str, ...],
    ) -> None:
        """Prometheus recording + multi-window multi-burn-rate alerting rules.

        Exits 2, writing nothing, when no SLO in the files can be expressed as rules.
        """
        from pathlib import Path

        from chaoslab.errors import InvalidInput
        from chaoslab.model.openslo import load_slo_files
        from chaoslab.sli.rules import generate_rules
        from chaoslab.verdict import ExitCode

        try:
            slos = load_slo_files(slo_files)
        except InvalidInput as exc:
            for p in exc.problems:
                click.echo(f"error: {p}", err=True)
            sys.exit(int(ExitCode.INVALID_INPUT))
        custom = _load_windows(windows_files)
        ruleset = generate_rules(
            slos, scrape_interval_s=scrape_interval_s, format=rules_format, windows=custom
        )
        if not ruleset.groups:
            if not slos:
                why = "the files hold no SLO (only other OpenSLO objects)"
            else:
                why = "; ".join(f"{name}: {reason}" for name, reason in ruleset.skipped)
            click.echo(f"error: no rules generated: {why}", err=True)
            sys.exit(int(ExitCode.INVALID_INPUT))
        for name, reason in ruleset.skipped:
            click.echo(f"warning: no rules for SLO {name!r}: {reason}", err=True)
        for w in ruleset.warnings:
            click.echo(f"warning: {w}", err=True)
        text = ruleset.to_yaml()
        if legacy_out is not None:
            click.echo("warning: -o/--output FILE is deprecated; use --out-file FILE", err=True)
            out = out or legacy_out
        if out:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            Path(out).write_text(text, encoding="utf-8")
            click.echo(f"wrote {len(ruleset.groups)} rule group(s) to {out}", err=True)
        else:
            click.echo(text, nl=False)
