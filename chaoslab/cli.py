"""The ``chaoslab`` command.

Exit codes (an IntEnum, ``chaoslab.verdict.ExitCode``)::

    0 passed · 1 deviated · 2 invalid input · 3 aborted · 4 inconclusive
    5 driver/infrastructure error · 6 NOT CLEAN after revert · 130 interrupted

chaoslab makes no network call of its own (no version check, no telemetry).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from chaoslab import __version__
from chaoslab.clitypes import OutputDir, OutputFile
from chaoslab.verdict import ExitCode

if TYPE_CHECKING:  # the commands import what they need: `chaoslab --help` stays fast
    from chaoslab.drivers.registry import DriverRegistry
    from chaoslab.engine.console import Sink
    from chaoslab.masking import Masker
    from chaoslab.model.experiment import Experiment

EXIT_CODES_HELP = """\b
Exit codes:
  0   passed        the steady state held before, during and after
  1   deviated      an SLO or tolerance failed during/after the method
  2   invalid input the experiment or the command line is wrong; nothing ran
  3   aborted       the guard or 'chaoslab halt' stopped the run
  4   inconclusive  too few samples, or the baseline did not hold
  5   error         a driver or the infrastructure failed
  6   not clean     a target still shows a fault after revert (the worst)
  130 interrupted   SIGINT/SIGTERM, chaoslib.exit (SIGUSR1/SIGUSR2) or a control's
                    InterruptExecution/SystemExit; everything was reverted first
"""


VALIDATE_EXIT_HELP = """\b
Exit codes:
  0   valid          every file is a valid experiment
  2   invalid input  a file is wrong (every problem is listed)
"""

PLAN_EXIT_HELP = """\b
Exit codes:
  0   planned        the plan is printed; nothing was touched
  2   invalid input  the experiment is wrong (every problem is listed)
  5   error          a target or an activity cannot be resolved on this machine
"""


def _stderr() -> Sink:
    from chaoslab.engine.console import sink_for

    return sink_for(sys.stderr)


def _fail_invalid(exc: Exception, output: str = "text") -> NoReturn:
    import msgspec

    from chaoslab.errors import InvalidInput

    problems = exc.problems if isinstance(exc, InvalidInput) else ()
    if output == "json":
        click.echo(
            json.dumps(
                {
                    "verdict": "invalid-input",
                    "exit_code": int(ExitCode.INVALID_INPUT),
                    "problems": [msgspec.structs.asdict(p) for p in problems] or [str(exc)],
                },
                indent=2,
            )
        )
    else:
        err = _stderr()
        err.line(
            ("invalid input", "bold red"),
            f" ({len(problems) or 1} problem{'s' if len(problems) > 1 else ''}):",
        )
        for p in problems or [exc]:
            err.line(f"  • {p}")
    sys.exit(ExitCode.INVALID_INPUT)


def _registry() -> DriverRegistry:
    from chaoslab.drivers.registry import DriverRegistry

    return DriverRegistry()


def _load(path: str, output: str = "text") -> Experiment:
    from chaoslab.engine.compile import load_experiment
    from chaoslab.errors import InvalidInput

    try:
        return load_experiment(path, registry=_registry())
    except InvalidInput as exc:
        _fail_invalid(exc, output)


# Command groups living in other packages, by the names they add. They are imported only
# when one of their commands is asked for, so `chaoslab run` loads none of them.
_LAZY_COMMANDS = {
    "lab": "chaoslab.lab.cli",
    "recover": "chaoslab.safety.cli",
    "halt": "chaoslab.safety.cli",
    "report": "chaoslab.report.cli",
    "gate": "chaoslab.gate.cli",
    "slo": "chaoslab.sli.slo_cli",
    "schedule": "chaoslab.scheduler.cli",
    "gameday": "chaoslab.scheduler.cli",
    "export": "chaoslab.scheduler.cli",
    "serve": "chaoslab.serve.cli",
}


class _LazyGroup(click.Group):
    """A group whose other-package commands register themselves on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = _LAZY_COMMANDS.get(cmd_name)
        if module is not None and cmd_name not in self.commands:
            import importlib

            importlib.import_module(module).register(self)
        return super().get_command(ctx, cmd_name)


@click.group(cls=_LazyGroup, epilog=EXIT_CODES_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="chaoslab")
def main() -> None:
    """chaoslab — chaos experiments whose steady state is an SLO; every fault leased and reverted."""
    from chaoslab.masking import masked_output

    masked_output()  # URL credentials are masked in every command's output from here on


def _parse_vars(values: tuple[str, ...]) -> dict[str, Any]:
    if not values:
        return {}
    from chaoslib import convert_vars

    try:
        return dict(convert_vars(list(values)))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--var") from exc


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("experiment", type=click.Path(dir_okay=False, readable=False))
@click.option(
    "--var",
    "variables",
    multiple=True,
    metavar="NAME[:TYPE]=VALUE",
    help="Override a configuration value (as chaos run --var does).",
)
@click.option(
    "--var-file",
    "var_files",
    multiple=True,
    metavar="FILE",
    help="JSON/YAML file with configuration/secrets, or a .env file.",
)
@click.option(
    "--run-dir",
    type=OutputDir(),
    default=None,
    help="Where events.ndjson and journal.json go [default: ./chaoslab-runs/RUN_ID].",
)
@click.option(
    "--journal-path",
    type=OutputFile(),
    default=None,
    help="Also copy the final journal.json here (like chaos run --journal-path).",
)
@click.option(
    "--hypothesis-strategy",
    type=click.Choice(
        ["default", "before-method-only", "after-method-only", "during-method-only", "continuously"]
    ),
    help="When the steady-state hypothesis is checked, as chaos run --hypothesis-strategy "
    "[default: the experiment's own, else before and after the method].",
)
@click.option(
    "--rollback-strategy",
    type=click.Choice(["always", "default", "never", "deviated"]),
    help="chaoslab's default is always: rollbacks run even after an interruption.",
)
@click.option(
    "--seed", type=int, default=None, help="Seed for random target selection (recorded in the journal)."
)
@click.option("--html", "html_path", type=OutputFile(), help="Write the HTML report here.")
@click.option(
    "--markdown",
    "markdown_path",
    type=OutputFile(),
    help="Write the blameless postmortem draft (Markdown) here.",
)
@click.option("--junit", "junit_path", type=OutputFile(), help="Write JUnit XML here.")
@click.option("--summary", "summary_path", type=OutputFile(), help="Write a Markdown job summary here.")
@click.option(
    "--ignore-budget",
    is_flag=True,
    help="Run even when the SLO files' error budget is exhausted or a page-level burn is active.",
)
@click.option(
    "--recover-first",
    is_flag=True,
    help="Revert open ledger entries of dead runs before starting (else: refuse).",
)
@click.option(
    "--output",
    type=click.Choice(["text", "json"]),
    default="text",
    help="json prints one machine-readable result on stdout; progress goes to stderr.",
)
def run(
    experiment: str,
    variables: tuple[str, ...],
    var_files: tuple[str, ...],
    run_dir: str | None,
    journal_path: str | None,
    hypothesis_strategy: str | None,
    rollback_strategy: str | None,
    seed: int | None,
    html_path: str | None,
    markdown_path: str | None,
    junit_path: str | None,
    summary_path: str | None,
    ignore_budget: bool,
    recover_first: bool,
    output: str,
) -> None:
    """Run an experiment: baseline, method, recovery, after; revert everything; verdict.

    Progress is coloured on a terminal and plain text into a pipe or a CI log
    (FORCE_COLOR=1 forces colour).
    """
    from chaoslab.engine.console import ConsoleProgress, sink_for
    from chaoslab.engine.events import EventBus
    from chaoslab.engine.runner import RunOptions, new_run_id
    from chaoslab.errors import ChaoslabError, InvalidInput, LedgerError, LockHeld, RunInterrupted
    from chaoslab.model.experiment import RollbackStrategy, Strategy
    from chaoslab.model.varfile import read_var_files
    from chaoslab.safety.halt import Halted
    from chaoslab.session import SessionOptions, run_experiment

    masker = _run_masker(experiment, variables, var_files)
    exp = _load(experiment, output)
    variables_d = _parse_vars(variables)
    try:
        var_values = read_var_files(var_files) if var_files else None
        # Before anything runs: a configuration the run would refuse is invalid input now.
        from chaoslab.engine.configuration import load_configuration

        load_configuration(exp, variables_d, var_values)
    except InvalidInput as exc:
        _fail_invalid(exc, output)
    run_id = new_run_id()
    rdir = Path(run_dir) if run_dir else Path.cwd() / "chaoslab-runs" / run_id
    bus = EventBus(masker)
    sink = sink_for(sys.stderr if output == "json" else sys.stdout)
    bus.subscribe(ConsoleProgress(sink))
    from chaoslab.paths import StatePaths

    state = StatePaths.from_environment()  # the one read of CHAOSLAB_HOME; passed down from here
    options = RunOptions(
        run_dir=rdir,
        state=state,
        variables=variables_d,
        var_values=var_values,
        strategy=Strategy(hypothesis_strategy) if hypothesis_strategy else None,
        rollback_strategy=RollbackStrategy(rollback_strategy) if rollback_strategy else None,
        seed=seed,
        ignore_signals_after=True,
    )
    try:
        result, recovered = run_experiment(
            exp,
            registry=_registry(),
            options=options,
            bus=bus,
            run_id=run_id,
            session=SessionOptions(state=state, recover_first=recover_first, ignore_budget=ignore_budget),
        )
    except InvalidInput as exc:
        _fail_invalid(exc, output)
    except Halted as exc:
        _refuse(str(exc), ExitCode.ABORTED, output)
    except RunInterrupted as exc:  # before the runner started: nothing was injected
        code = ExitCode.ABORTED if exc.signame == "HALT" else ExitCode.INTERRUPTED
        _refuse(f"{exc} before the run started; nothing was injected", code, output)
    except KeyboardInterrupt:
        _refuse("interrupted before the run started; nothing was injected", ExitCode.INTERRUPTED, output)
    except (LockHeld, LedgerError, ChaoslabError) as exc:
        _refuse(str(exc), ExitCode.ERROR, output)
    if recovered is not None and recovered.outcomes:
        for line in recovered.lines():
            sink.line(f"recover: {line}")
    if journal_path:
        import shutil

        Path(journal_path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(result.journal_path, journal_path)
    if html_path or markdown_path or junit_path or summary_path:
        from chaoslab.report import write_reports

        def as_path(p: str | None) -> Path | None:
            return Path(p) if p else None

        written = write_reports(
            result.journal,
            html=as_path(html_path),
            markdown=as_path(markdown_path),
            junit=as_path(junit_path),
            summary=as_path(summary_path),
        )
        for kind, path in written.items():
            sink.line(f"{kind}: {path}")
    if output == "json":
        click.echo(
            json.dumps(
                {
                    "run_id": result.run_id,
                    "title": exp.title,
                    "verdict": result.verdict.value,
                    "exit_code": int(result.verdict.exit_code),
                    "reason": result.reason,
                    "journal": str(result.journal_path),
                    "events": str(result.events_path),
                    "deviated": result.journal.get("deviated"),
                    "status": result.journal.get("status"),
                    "slo": result.journal["chaoslab"].get("slo", []),
                    "breach_to_clean_s": result.breach_to_clean_s,
                },
                indent=2,
            )
        )
    else:
        sink.line(f"journal: {result.journal_path}")
    sys.exit(int(result.verdict.exit_code))


def _run_masker(experiment: str, variables: tuple[str, ...], var_files: tuple[str, ...]) -> Masker:
    """The run's masker, installed on stdout/stderr, with every secret the experiment
    file and the var files name, read before the experiment is loaded: even the loader's
    error messages are masked."""
    from chaoslab.engine.secrets import add_experiment_secrets, read_structured
    from chaoslab.masking import masked_output

    masker = masked_output()
    raw = read_structured(experiment)
    pairs = dict(v.split("=", 1) for v in variables if "=" in v)
    add_experiment_secrets(
        masker,
        raw=raw if isinstance(raw, dict) else {},
        source=experiment,
        variables={k.split(":", 1)[0]: v for k, v in pairs.items()},
        var_files=var_files,
    )
    return masker


def _refuse(message: str, code: ExitCode, output: str) -> NoReturn:
    if output == "json":
        click.echo(json.dumps({"verdict": "refused", "exit_code": int(code), "reason": message}, indent=2))
    else:
        _stderr().line(("refused:", "bold red"), f" {message}")
    sys.exit(int(code))


@main.command(epilog=VALIDATE_EXIT_HELP)
@click.argument("experiments", nargs=-1, required=True, type=click.Path(dir_okay=False, readable=False))
@click.option(
    "--output",
    type=click.Choice(["text", "json"]),
    default="text",
    help="text for people; json prints one machine-readable document on stdout.",
)
def validate(experiments: tuple[str, ...], output: str) -> None:
    """Check experiment files; report every problem with file, line and field path."""
    from chaoslab.engine.compile import load_experiment
    from chaoslab.engine.configuration import load_configuration
    from chaoslab.errors import InvalidInput, Problem

    problems: list[Problem] = []
    warnings: list[str] = []
    for path in experiments:
        _run_masker(path, (), ())  # a problem quoting a secret prints it masked
        try:
            exp = load_experiment(path, registry=_registry())
            load_configuration(exp)  # as `chaos validate`: a missing environment key is invalid
        except InvalidInput as exc:
            problems.extend(exc.problems)
        else:
            warnings.extend(exp.warnings)
    if problems:
        _fail_invalid(InvalidInput(problems), output)
    if output == "json":
        click.echo(json.dumps({"valid": list(experiments), "warnings": warnings}))
    else:
        for w in warnings:
            click.echo(f"warning: {w}", err=True)
        for path in experiments:
            click.echo(f"{path}: valid")


@main.command(epilog=PLAN_EXIT_HELP)
@click.argument("experiment", type=click.Path(dir_okay=False, readable=False))
@click.option(
    "--output",
    type=click.Choice(["text", "json"]),
    default="text",
    help="text for people; json prints one machine-readable document on stdout.",
)
@click.option(
    "--seed",
    type=int,
    default=None,
    help="Seed for random target selection: run --seed with the same seed picks the same targets.",
)
def plan(experiment: str, output: str, seed: int | None) -> None:
    """Show what a run would do (targets resolved, leases, rollbacks), touching nothing."""
    from chaoslab.engine.plan import make_plan, render_plan
    from chaoslab.errors import ChaoslabError, InvalidInput
    from chaoslab.paths import StatePaths

    _run_masker(experiment, (), ())  # resolved arguments may hold secrets
    exp = _load(experiment, output)
    try:
        the_plan = make_plan(exp, registry=_registry(), seed=seed, state=StatePaths.from_environment())
    except InvalidInput as exc:
        _fail_invalid(exc, output)
    except ChaoslabError as exc:
        _stderr().line(("cannot plan:", "red"), f" {exc}")
        sys.exit(ExitCode.ERROR)
    if output == "json":
        click.echo(json.dumps(the_plan, indent=2, default=str))
    else:
        render_plan(the_plan)
    errors = [step["error"] for step in the_plan["method"] if step.get("error")]
    if errors:
        for e in errors:
            click.echo(f"cannot run as planned: {e}", err=True)
        sys.exit(ExitCode.ERROR)


@main.command()
@click.option(
    "--output",
    type=click.Choice(["text", "json"]),
    default="text",
    help="text for people; json prints one machine-readable document on stdout.",
)
def drivers(output: str) -> None:
    """The fault vocabulary (operation x platform, target syntax per platform), then
    installed drivers and their operations (the driver.operation spellings)."""
    from chaoslab.drivers import vocabulary
    from chaoslab.errors import ChaoslabError

    reg = _registry()
    listing: list[dict[str, Any]] = []
    for name in reg.names():
        try:
            d = reg.get(name)
        except ChaoslabError as exc:
            listing.append({"name": name, "error": str(exc)})
            continue
        listing.append(
            {
                "name": name,
                "summary": d.summary,
                "operations": [
                    {
                        "name": op.name,
                        "kind": op.kind.value,
                        "lease": op.lease.value,
                        "summary": op.summary,
                        "params": [
                            {"name": p.name, "required": p.required, "help": p.help, "default": p.default}
                            for p in op.params
                        ],
                    }
                    for op in d.operations()
                ],
            }
        )
    if output == "json":
        doc = {
            "operations": vocabulary.matrix(),
            "platforms": {
                p: {"schemes": list(schemes), "syntax": vocabulary.TARGET_SYNTAX[p]}
                for p, schemes in vocabulary.PLATFORMS.items()
            },
            "drivers": listing,
        }
        click.echo(json.dumps(doc, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    platforms = list(vocabulary.PLATFORMS)
    grid = Table("operation", *platforms, "parameters", box=None, title="operation x platform")
    for row in vocabulary.matrix():
        cells = [
            " ".join(
                [
                    row["platforms"][p]["driver"],
                    *(f"{k}={v}" for k, v in row["platforms"][p]["fixed"].items()),
                ]
            )
            if p in row["platforms"]
            else "—"
            for p in platforms
        ]
        params = ", ".join(f"{p['name']} ({p['unit']})" for p in row["params"])
        grid.add_row(row["operation"], *cells, params)
    Console().print(grid)
    syntax = Table("platform", "target syntax", box=None)
    for p in platforms:
        syntax.add_row(p, vocabulary.TARGET_SYNTAX[p])
    Console().print(syntax)
    table = Table("driver", "operation", "kind", "lease", "summary", box=None)
    for entry in listing:
        if "error" in entry:
            table.add_row(entry["name"], "—", "—", "—", f"[red]{entry['error']}[/]")
            continue
        for op in entry["operations"]:
            table.add_row(entry["name"], op["name"], op["kind"], op["lease"], op["summary"])
    Console().print(table)


if __name__ == "__main__":
    main()
