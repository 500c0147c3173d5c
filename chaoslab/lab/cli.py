"""``chaoslab lab up | down | status``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from chaoslab.clitypes import Duration
from chaoslab.verdict import ExitCode


def _home() -> Path:
    """chaoslab's home: the one read of ``CHAOSLAB_HOME`` for these commands."""
    from chaoslab.paths import StatePaths

    return StatePaths.from_environment().home


def register(main: click.Group) -> None:
    @main.group()
    def lab() -> None:
        """The embedded lab: 3 replicas behind a retrying load balancer, self-healing."""

    @lab.command()
    @click.option(
        "--replicas",
        default=3,
        show_default=True,
        type=click.IntRange(1, 16),
        help="How many HTTP replicas behind the balancer.",
    )
    @click.option(
        "--restart-delay",
        default=1.0,
        show_default=True,
        type=Duration(max_s=60),
        help="How long (e.g. 1s) before the supervisor restarts a dead replica.",
    )
    def up(replicas: int, restart_delay: float) -> None:
        """Start the lab (idempotent: a running lab is reused)."""
        from chaoslab.errors import ChaoslabError
        from chaoslab.lab.control import format_status, status
        from chaoslab.lab.control import up as lab_up

        home = _home()
        try:
            lab_up(replicas, restart_delay, home)
        except ChaoslabError as exc:
            click.echo(f"lab up failed: {exc}", err=True)
            sys.exit(ExitCode.ERROR)
        click.echo(format_status(status(home)))

    @lab.command()
    def down() -> None:
        """Stop every lab process and remove the lab's files."""
        from chaoslab.lab.control import down as lab_down

        click.echo("lab: stopped" if lab_down(_home()) else "lab: was not running")

    @lab.command()
    @click.option(
        "--output",
        type=click.Choice(["text", "json"]),
        default="text",
        help="text for people; json prints one machine-readable document on stdout.",
    )
    def status(output: str) -> None:
        """What runs, checked now (pids and health endpoints)."""
        from chaoslab.lab.control import format_status
        from chaoslab.lab.control import status as lab_status

        st = lab_status(_home())
        click.echo(json.dumps(st, indent=2, default=str) if output == "json" else format_status(st))
