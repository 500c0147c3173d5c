"""``chaoslab gate``: added to the main command by ``register``.

Heavy imports stay inside the command function: ``chaoslab --help`` imports this module
to list the command.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import click

from chaoslab.clitypes import FiniteRange, OutputDir, OutputFile
from chaoslab.paths import StatePaths
from chaoslab.report.cli import console_err, exit_invalid, write_metrics
from chaoslab.report.exitcodes import GATE_EXIT_HELP, GateExit
from chaoslab.units import finite_tree

DEFAULT_GATE_DIR = "chaoslab-gate"


def register(main: click.Group) -> None:
    """Add ``gate`` to ``main``."""

    @main.command("gate", epilog=GATE_EXIT_HELP)
    @click.argument("experiments", nargs=-1, type=click.Path(dir_okay=False, readable=False))
    @click.option(
        "--suite",
        "suite_path",
        type=click.Path(dir_okay=False, readable=False),
        help="Suite file: {name, experiments: [{path, weight, key}], thresholds, tolerance}.",
    )
    @click.option(
        "--name",
        default="default",
        show_default=True,
        help="Suite name for experiments given as arguments (the baseline is kept by name).",
    )
    @click.option("--pass-threshold", type=FiniteRange(0, 100), help="Override thresholds.pass.")
    @click.option("--warn-threshold", type=FiniteRange(0, 100), help="Override thresholds.warn.")
    @click.option(
        "--baseline",
        "baseline_file",
        type=click.Path(dir_okay=False, readable=False),
        help="Baseline JSON the pipeline keeps [default: chaoslab's store, HOME/gate/SUITE/].",
    )
    @click.option(
        "--update-baseline/--no-update-baseline",
        default=True,
        show_default=True,
        help="Replace the baseline when the gate passes.",
    )
    @click.option(
        "--require-baseline",
        is_flag=True,
        help="No baseline to compare with is inconclusive (exit 4) instead of a note.",
    )
    @click.option(
        "--output-dir",
        type=OutputDir(),
        default=DEFAULT_GATE_DIR,
        show_default=True,
        help="Run directories, gate.json, JUnit and summary go here.",
    )
    @click.option("--junit", type=OutputFile(), help="[default: OUTPUT_DIR/junit.xml]")
    @click.option("--summary", type=OutputFile(), help="[default: OUTPUT_DIR/summary.md]")
    @click.option("--metrics-file", type=OutputFile(), help="Prometheus text exposition file.")
    @click.option("--pushgateway", metavar="URL", help="Push the gate's metrics to a Pushgateway.")
    @click.option(
        "--timeout",
        "timeout_s",
        type=FiniteRange(min=1),
        default=1800,
        show_default=True,
        help="Seconds per experiment before it is stopped (SIGTERM, it reverts).",
    )
    @click.option("--label", default="", help="Stored with the baseline (e.g. the commit or release).")
    @click.option(
        "--output",
        type=click.Choice(["text", "json"]),
        default="text",
        help="json prints gate.json on stdout.",
    )
    def gate(
        experiments: tuple[str, ...],
        suite_path: str | None,
        name: str,
        pass_threshold: float | None,
        warn_threshold: float | None,
        baseline_file: str | None,
        update_baseline: bool,
        require_baseline: bool,
        output_dir: str,
        junit: str | None,
        summary: str | None,
        metrics_file: str | None,
        pushgateway: str | None,
        timeout_s: float,
        label: str,
        output: str,
    ) -> None:
        """Run a resilience suite in order, score it, compare with the last passing gate.

        Give experiment files as arguments (weight 1 each) or a --suite file. JUnit and a
        Markdown summary are written every time; with GITHUB_STEP_SUMMARY set the summary
        is also appended there.
        """
        import dataclasses

        from chaoslab import gate as g
        from chaoslab.errors import InvalidInput, Problem
        from chaoslab.report import baseline as bl
        from chaoslab.report.junit import invalid_junit, write_junit
        from chaoslab.report.metrics import MetricsError, gate_runs
        from chaoslab.report.score import Thresholds

        out_dir = Path(output_dir)
        junit_path = Path(junit) if junit else out_dir / "junit.xml"
        summary_path = Path(summary) if summary else out_dir / "summary.md"
        console = console_err()

        def invalid(problems: Any, suite_name: str) -> NoReturn:
            # The README promises JUnit, the summary and gate.json on every gate, and one
            # result on stdout with --output json: invalid input is a result too.
            texts = [str(p) for p in problems] or ["invalid input"]
            doc = g.invalid_result(suite_name, texts)
            try:
                write_junit(invalid_junit(suite_name, texts), junit_path)
                summary_path.parent.mkdir(parents=True, exist_ok=True)
                summary_path.write_text(
                    f"## ⚠️ chaoslab gate `{suite_name}`: **invalid input** (exit 2)\n\n"
                    + "\n".join(f"- {t}" for t in texts)
                    + "\n\nNothing was run.\n",
                    "utf-8",
                )
                out_dir.mkdir(parents=True, exist_ok=True)
                (out_dir / "gate.json").write_text(
                    json.dumps(finite_tree(doc), indent=2, allow_nan=False), "utf-8"
                )
            except OSError as exc:
                doc["problems"].append(f"cannot write the gate's reports: {exc}")
            if output == "json":
                click.echo(json.dumps(finite_tree(doc), indent=2, allow_nan=False))
            exit_invalid(texts, int(GateExit.INVALID_INPUT))

        if bool(experiments) == bool(suite_path):
            invalid(["give experiment files or --suite FILE (exactly one of them)"], name)
        try:
            if suite_path:
                suite = g.load_suite(suite_path)
            else:
                suite = g.suite_from_paths(
                    list(experiments), name=name, thresholds=Thresholds(), tolerance=bl.Tolerance()
                )
            if pass_threshold is not None or warn_threshold is not None:
                try:
                    th = Thresholds(
                        pass_at=pass_threshold if pass_threshold is not None else suite.thresholds.pass_at,
                        warn_at=warn_threshold if warn_threshold is not None else suite.thresholds.warn_at,
                    )
                except ValueError as exc:
                    raise InvalidInput([Problem(message=str(exc))]) from exc
                suite = dataclasses.replace(suite, thresholds=th)
        except InvalidInput as exc:
            invalid(exc.problems, name)

        def on_term(signum: int, frame: FrameType | None) -> None:
            raise g.GateInterrupted(signal.Signals(signum).name)

        previous = signal.signal(signal.SIGTERM, on_term)
        try:
            result = g.run_gate(
                suite,
                g.GateOptions(
                    output_dir=out_dir,
                    home=StatePaths.from_environment().home,
                    baseline_path=Path(baseline_file) if baseline_file else None,
                    update_baseline=update_baseline,
                    require_baseline=require_baseline,
                    timeout_s=timeout_s,
                    label=label,
                ),
                progress=lambda msg: console.print(msg, markup=False),
            )
        except InvalidInput as exc:
            invalid(exc.problems, suite.name)
        except (KeyboardInterrupt, g.GateInterrupted):
            # Interrupted before any run started (validation); nothing to revert.
            console.print("[yellow]interrupted[/]")
            sys.exit(int(GateExit.INTERRUPTED))
        finally:
            signal.signal(signal.SIGTERM, previous)
        exit_code = result.exit
        try:
            g.write_outputs(result, junit_path=junit_path, summary_path=summary_path)
        except OSError as exc:
            console.print(f"[red]cannot write gate reports:[/] {exc}")
            exit_code = GateExit.INFRA_ERROR
        try:
            write_metrics(
                gate_runs(result), result, metrics_file, pushgateway, "chaoslab_gate", {"suite": suite.name}
            )
        except MetricsError:
            # A failed push must not hide a gate failure, but must not let a pass through silently.
            if exit_code in (GateExit.PASS, GateExit.WARNING):
                exit_code = GateExit.INFRA_ERROR
        comp = result.comparison
        if output == "json":
            click.echo(json.dumps(finite_tree(result.to_dict()), indent=2, allow_nan=False))
        else:
            colour = {GateExit.PASS: "green", GateExit.WARNING: "yellow"}.get(result.exit, "red")
            console.print(
                f"[bold {colour}]gate {result.exit.name.lower()}[/] (exit {int(result.exit)}): "
                f"{result.reason}",
                markup=True,
                highlight=False,
            )
            console.print(
                f"score {result.score.value:g} (range {result.score.low:g}–{result.score.high:g}; "
                f"pass ≥ {suite.thresholds.pass_at:g}, warn ≥ {suite.thresholds.warn_at:g})",
                markup=False,
            )
            console.print(f"baseline: {comp.headline()}", markup=False)
            for r in comp.regressions:
                console.print(f"  regression: {r.message}", markup=False)
            if result.baseline_updated:
                console.print(f"baseline updated: {comp.source}", markup=False)
            console.print(f"junit: {junit_path}  summary: {summary_path}", markup=False)
        sys.exit(int(exit_code))
