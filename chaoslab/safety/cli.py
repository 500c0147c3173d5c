"""``chaoslab recover`` and ``chaoslab halt``."""

from __future__ import annotations

import dataclasses
import json
import sys

import click

from chaoslab.clitypes import Duration
from chaoslab.verdict import ExitCode


def register(main: click.Group) -> None:
    @main.command()
    @click.option(
        "--output",
        type=click.Choice(["text", "json"]),
        default="text",
        help="text for people; json prints one machine-readable document on stdout.",
    )
    @click.option(
        "--include-live",
        is_flag=True,
        help="Also revert entries whose run is still alive (careful: that run is still going).",
    )
    def recover(output: str, include_live: bool) -> None:
        """Revert every open ledger entry left by dead runs, verify clean, and report."""
        from chaoslab.drivers.registry import DriverRegistry
        from chaoslab.errors import LedgerError
        from chaoslab.masking import masked_output
        from chaoslab.paths import StatePaths
        from chaoslab.safety.ledger import Ledger
        from chaoslab.safety.recover import recover as do_recover

        state = StatePaths.from_environment()  # the one read of CHAOSLAB_HOME; passed down
        # Secrets put back into records to revert them are added to the output's masker.
        ledger = Ledger(state.ledger, masker=masked_output())
        try:
            report = do_recover(
                DriverRegistry(), only_dead_owners=not include_live, ledger=ledger, home=state.home
            )
        except LedgerError as exc:
            click.echo(f"recover: {exc}", err=True)
            sys.exit(ExitCode.ERROR)
        from chaoslab.lab.control import stop_orphaned_lab

        if note := stop_orphaned_lab(state.home):  # a lab a dead run started is part of what it left
            report = dataclasses.replace(report, notes=(*report.notes, note))
        if output == "json":
            click.echo(json.dumps(report.to_dict(), indent=2, default=str))
        else:
            lines = report.lines()
            click.echo("\n".join(lines) if lines else "recover: the ledger has no open entries")
        sys.exit(ExitCode.PASSED if report.ok else ExitCode.NOT_CLEAN)

    @main.command()
    @click.option("--release", is_flag=True, help="Lift the halt so runs may start again.")
    @click.option("--reason", default="", help="Why (recorded in the halt file, shown to refused runs).")
    @click.option(
        "--grace",
        default=10.0,
        show_default=True,
        type=Duration(max_s=600),
        help="How long (e.g. 10s) runs get to revert before halt reverts their faults itself.",
    )
    @click.option(
        "--output",
        type=click.Choice(["text", "json"]),
        default="text",
        help="text for people; json prints one machine-readable document on stdout.",
    )
    def halt(release: bool, reason: str, grace: float, output: str) -> None:
        """The big red button: every run on this machine reverts now; new runs are blocked."""
        from chaoslab.drivers.registry import DriverRegistry
        from chaoslab.paths import StatePaths
        from chaoslab.safety.halt import halt as do_halt
        from chaoslab.safety.halt import release as do_release

        home = StatePaths.from_environment().home  # the one read of CHAOSLAB_HOME
        if release:
            state = do_release(home)
            click.echo("halt released" if state else "no halt was in force")
            return
        report = do_halt(DriverRegistry(), reason=reason, grace_s=grace, home=home)
        if output == "json":
            click.echo(json.dumps(report.to_dict(), indent=2, default=str))
        else:
            click.echo("\n".join(report.lines()))
        sys.exit(ExitCode.PASSED if report.ok else ExitCode.NOT_CLEAN)
