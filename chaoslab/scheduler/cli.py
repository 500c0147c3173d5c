"""CLI commands of the scheduler: ``schedule``, ``gameday run``, ``export cronjob``.

``register(main)`` adds them to the ``chaoslab`` group. Heavy imports stay inside the
commands (``chaoslab run``'s startup time is benchmarked).

Common options: ``--scenarios`` (files or directories; default ``$CHAOSLAB_SCENARIOS``
or ``./scenarios``), ``--store`` (default ``$CHAOSLAB_STORE`` or SQLite in chaoslab's
home), ``--runs-dir`` (default ``<home>/scheduler/runs``).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from chaoslab.clitypes import Duration, OutputDir, OutputFile
from chaoslab.verdict import ExitCode


def _fail(problems: list[str], code: int = ExitCode.INVALID_INPUT) -> NoReturn:
    head = "invalid input" if code == ExitCode.INVALID_INPUT else "error"
    click.echo(f"{head} ({len(problems)} problem{'s' if len(problems) != 1 else ''}):", err=True)
    for p in problems:
        click.echo(f"  • {p}", err=True)
    sys.exit(code)


def _scenarios(paths: tuple[str, ...]) -> list[Any]:
    from chaoslab.errors import InvalidInput
    from chaoslab.scheduler.scenario import load_scenarios

    chosen = paths or tuple(os.environ.get("CHAOSLAB_SCENARIOS", "scenarios").split(os.pathsep))
    missing = [p for p in chosen if not Path(p).exists()]
    if missing:
        _fail([f"{p}: no such file or directory" for p in missing])
    try:
        return load_scenarios(chosen)
    except InvalidInput as exc:
        _fail([str(p) for p in exc.problems])


def _history_names(names: tuple[str, ...], files: tuple[str, ...]) -> list[str]:
    """Scenario names from what a user typed: names, or paths of scenario files/directories
    (``-s``, or a path given where a name is expected)."""
    from chaoslab.scheduler.scenario import NAME

    out: list[str] = []
    paths_given = list(files)
    for n in names:
        if NAME.match(n) and not Path(n).is_file():
            out.append(n)
        elif Path(n).exists():
            paths_given.append(n)
        else:
            _fail([f"{n}: neither a scenario name (lowercase letters, digits, '.', '_', '-') nor a file"])
    if paths_given:
        out += [sc.name for sc in _scenarios(tuple(paths_given))]
    return list(dict.fromkeys(out))


def _home() -> Path:
    """chaoslab's home: the one read of ``CHAOSLAB_HOME`` for these commands."""
    from chaoslab.paths import StatePaths

    return StatePaths.from_environment().home


def _store(url: str | None) -> Any:
    from chaoslab.scheduler.store import StoreError, default_url, open_store

    try:
        return open_store(url or os.environ.get("CHAOSLAB_STORE") or default_url(_home()))
    except StoreError as exc:
        _fail([str(exc)], ExitCode.ERROR)


def _runs_root(value: str | None) -> Path:
    return Path(value) if value else _home() / "scheduler" / "runs"


STORE_HELP = "sqlite:///path.db or postgresql://… [default: $CHAOSLAB_STORE or SQLite in CHAOSLAB_HOME]."


def _common[G: Callable[..., Any]](f: G) -> G:
    f = click.option(
        "--scenarios",
        "-s",
        multiple=True,
        type=click.Path(readable=False),
        help="Scenario files or directories [default: $CHAOSLAB_SCENARIOS or ./scenarios].",
    )(f)
    f = click.option(
        "--store",
        default=None,
        metavar="URL",
        help=STORE_HELP,
    )(f)
    return f


def _logging(verbose: bool) -> None:
    import logging

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def register(main: click.Group) -> None:
    """Add ``schedule``, ``gameday`` and ``export`` to the ``chaoslab`` command."""

    @main.group()
    def schedule() -> None:
        """Scenarios on a calendar: list, next, history, run --once, daemon."""

    @schedule.command("list")
    @_common
    @click.option(
        "--output",
        type=click.Choice(["text", "json"]),
        default="text",
        help="text for people; json prints one machine-readable document on stdout.",
    )
    def list_(scenarios: tuple[str, ...], store: str | None, output: str) -> None:
        """Show the scenarios, their triggers, windows and next run."""
        from datetime import UTC, datetime

        from chaoslab.scheduler.triggers import human, run_at

        now = datetime.now(UTC)
        rows = []
        for sc in _scenarios(scenarios):
            nxt = sc.trigger.next_after(now)
            rows.append(
                {
                    "name": sc.name,
                    "kind": sc.kind + (" (leashed)" if sc.monkey is not None and sc.monkey.leashed else ""),
                    "trigger": sc.trigger.describe()
                    + (f" + jitter < {human(sc.jitter_s)}" if sc.jitter_s else ""),
                    "timezone": sc.tz.key,
                    "windows": "; ".join(w.describe() for w in sc.calendar.windows) or "any time",
                    "blackouts": len(sc.calendar.blackouts),
                    "concurrency": sc.concurrency,
                    "misfire": f"{sc.misfire.policy}"
                    + (f" (grace {human(sc.misfire.grace_s)})" if sc.misfire.policy == "run-once" else ""),
                    "next": run_at(sc.name, nxt, sc.jitter_s).strftime("%Y-%m-%d %H:%M:%SZ") if nxt else None,
                    "file": str(sc.path),
                }
            )
        if output == "json":
            click.echo(json.dumps(rows, indent=2))
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(
            "scenario", "kind", "trigger", "windows", "misfire", "concurrency", "next run (UTC)", box=None
        )
        for r in rows:
            table.add_row(
                r["name"],
                r["kind"],
                r["trigger"],
                r["windows"],
                r["misfire"],
                r["concurrency"],
                r["next"] or "never",
            )
        Console().print(table)

    @schedule.command("next")
    @_common
    @click.option("--count", "-n", default=3, show_default=True, help="Slots per scenario.")
    @click.option(
        "--after",
        default=None,
        metavar="DATETIME",
        help="List the slots after this moment (ISO 8601, UTC unless it has an offset) [default: now].",
    )
    @click.option(
        "--output",
        type=click.Choice(["text", "json"]),
        default="text",
        help="text for people; json prints one machine-readable document on stdout.",
    )
    def next_(
        scenarios: tuple[str, ...], store: str | None, count: int, after: str | None, output: str
    ) -> None:
        """The next slots of every scenario, whether the calendar allows each, and how a
        daylight-saving change moves one (marked [DST: …])."""
        from datetime import UTC, datetime

        from chaoslab.scheduler.daemon import Scheduler, SchedulerConfig
        from chaoslab.scheduler.store import open_store

        start = datetime.now(UTC)
        if after is not None:
            try:
                start = datetime.fromisoformat(after)
            except ValueError:
                _fail([f"--after: not an ISO 8601 date-time: {after!r} (e.g. 2026-03-28T00:00)"])
            start = start if start.tzinfo else start.replace(tzinfo=UTC)
        sched = Scheduler(
            _scenarios(scenarios), open_store(":memory:"), SchedulerConfig(runs_root=Path("."), home=_home())
        )
        try:
            items = sched.upcoming(start, count)
        finally:
            sched.store.close()
        if output == "json":
            click.echo(
                json.dumps(
                    [
                        {
                            "scenario": u.scenario,
                            "slot": u.slot.isoformat(),
                            "run_at": u.run_at.isoformat(),
                            "refusal": u.refusal,
                            "dst": u.dst,
                        }
                        for u in items
                    ],
                    indent=2,
                )
            )
            return
        for u in items:
            note = f"  (will be skipped: {u.refusal})" if u.refusal else ""
            dst = f"  [DST: {u.dst}]" if u.dst else ""
            click.echo(f"{u.run_at.isoformat()}  {u.scenario}{note}{dst}")

    @schedule.command("history")
    @click.argument("names", nargs=-1, metavar="[SCENARIO]...")
    @click.option(
        "--scenarios",
        "-s",
        "files",
        multiple=True,
        type=click.Path(readable=False),
        help="Only the scenarios in these files or directories.",
    )
    @click.option(
        "--scenario", "named", multiple=True, metavar="NAME", help="Only this scenario (a name or its file)."
    )
    @click.option("--store", default=None, metavar="URL", help=STORE_HELP)
    @click.option("--limit", default=50, show_default=True, help="Show at most this many slots.")
    @click.option(
        "--output",
        type=click.Choice(["text", "json"]),
        default="text",
        help="text for people; json prints one machine-readable document on stdout.",
    )
    def history(
        names: tuple[str, ...],
        files: tuple[str, ...],
        named: tuple[str, ...],
        store: str | None,
        limit: int,
        output: str,
    ) -> None:
        """Recorded slots, newest first: what ran, what was skipped, and why.

        Filter by scenario name ('history lab-weekday-gameday', --scenario NAME) or
        by scenario file or directory (-s scenarios/lab-weekday-gameday.yaml); no
        filter shows every scenario.
        """
        wanted = _history_names((*names, *named), files)
        st = _store(store)
        try:
            rows = st.history(wanted or None, limit)
        finally:
            st.close()
        if output == "json":
            click.echo(json.dumps([{**r.__dict__, "steps": r.step_results()} for r in rows], indent=2))
            return
        if not rows:
            click.echo("no history yet" + (f" for {', '.join(wanted)}" if wanted else ""))
        for r in rows:
            verdict = f" {r.verdict}" if r.verdict else ""
            detail = f" — {r.detail}" if r.detail else ""
            click.echo(f"{r.slot}  {r.scenario}  {r.status}{verdict}{detail}")

    def _scheduler(
        scenarios: tuple[str, ...],
        store: str | None,
        runs_dir: str | None,
        max_parallel: int,
        on_time: str,
        lease: str,
    ) -> Any:
        from chaoslab.scheduler.daemon import Scheduler, SchedulerConfig
        from chaoslab.units import parse_duration as duration

        loaded = _scenarios(scenarios)
        try:
            config = SchedulerConfig(
                home=_home(),
                runs_root=_runs_root(runs_dir),
                max_parallel=max_parallel,
                on_time_s=duration(on_time),
                lease_s=duration(lease),
            )
        except ValueError as exc:
            _fail([str(exc)])
        return Scheduler(loaded, _store(store), config)

    def _sched_options[G: Callable[..., Any]](f: G) -> G:
        f = _common(f)
        f = click.option(
            "--runs-dir",
            default=None,
            type=OutputDir(),
            help="Where run directories go [default: CHAOSLAB_HOME/scheduler/runs].",
        )(f)
        f = click.option(
            "--max-parallel",
            default=4,
            show_default=True,
            type=click.IntRange(min=1),
            help="Slots run at once; a due slot that finds no free worker is recorded skipped"
            " (over max-parallel) once it may no longer run (at once with --once).",
        )(f)
        f = click.option(
            "--on-time",
            default="60s",
            type=Duration(max_s=86400),
            show_default=True,
            help="A slot found at most this late is on time (not a misfire).",
        )(f)
        f = click.option(
            "--lease",
            default="60s",
            type=Duration(positive=True, max_s=86400),
            show_default=True,
            help="A scheduler on another host silent this long is presumed dead.",
        )(f)
        f = click.option("-v", "--verbose", is_flag=True, help="Log every decision to stderr.")(f)
        return f

    @schedule.command("run")
    @_sched_options
    @click.option("--once", is_flag=True, help="Run what is due now, wait for it, exit (for cron / CI).")
    def run_(
        scenarios: tuple[str, ...],
        store: str | None,
        runs_dir: str | None,
        max_parallel: int,
        on_time: str,
        lease: str,
        verbose: bool,
        once: bool,
    ) -> None:
        """Run the slots due now, once (--once); exit with the worst verdict's code."""
        import signal

        from chaoslab.verdict import Verdict, worst

        if not once:
            _fail(["`schedule run` needs --once (use `chaoslab schedule daemon` to keep running)"])
        _logging(verbose)
        sched = _scheduler(scenarios, store, runs_dir, max_parallel, on_time, lease)
        signal.signal(signal.SIGTERM, lambda *_: sched.stop())
        signal.signal(signal.SIGINT, lambda *_: sched.stop())
        try:
            decisions = sched.run_once()
            rows = [sched.store.get(d.scenario, _key(d.slot)) for d in decisions]
        finally:
            sched.store.close()
        verdicts = []
        for r in rows:
            if r is None:
                continue
            click.echo(
                f"{r.slot}  {r.scenario}  {r.status}"
                + (f" {r.verdict}" if r.verdict else "")
                + (f" — {r.detail}" if r.detail else "")
            )
            if r.verdict and r.scheduler == sched.id:
                verdicts.append(Verdict(r.verdict))
        if not rows:
            click.echo("nothing due")
        sys.exit(int(worst(*verdicts).exit_code))

    @schedule.command("daemon")
    @_sched_options
    @click.option(
        "--tick",
        default="1s",
        type=Duration(positive=True, max_s=3600),
        show_default=True,
        help="How often to look for due slots.",
    )
    def daemon(
        scenarios: tuple[str, ...],
        store: str | None,
        runs_dir: str | None,
        max_parallel: int,
        on_time: str,
        lease: str,
        verbose: bool,
        tick: str,
    ) -> None:
        """Keep scheduling until SIGTERM/SIGINT; then let running slots revert, and exit."""
        import signal

        from chaoslab.units import parse_duration as duration

        _logging(True if verbose else False)
        sched = _scheduler(scenarios, store, runs_dir, max_parallel, on_time, lease)
        signal.signal(signal.SIGTERM, lambda *_: sched.stop())
        signal.signal(signal.SIGINT, lambda *_: sched.stop())
        click.echo(f"scheduler {sched.id}: {len(sched.scenarios)} scenario(s); SIGTERM stops it", err=True)
        try:
            sched.run_forever(tick_s=duration(tick))
        finally:
            sched.store.close()
        click.echo(f"scheduler {sched.id}: stopped", err=True)

    @main.group()
    def gameday() -> None:
        """Facilitated game days."""

    @gameday.command("run")
    @click.argument("scenario", type=click.Path(dir_okay=False, readable=False))
    @click.option("--confirm", is_flag=True, help="Ask on stdin before each step (y / s(kip) / q(uit)).")
    @click.option(
        "--no-gates", is_flag=True, help="Do not check the scenario's gates first (not recommended)."
    )
    @click.option("--store", default=None, metavar="URL", help=STORE_HELP)
    @click.option(
        "--runs-dir",
        default=None,
        type=OutputDir(),
        help="Where run directories go [default: CHAOSLAB_HOME/scheduler/runs].",
    )
    def gameday_run(
        scenario: str, confirm: bool, no_gates: bool, store: str | None, runs_dir: str | None
    ) -> None:
        """Run a scenario's steps now, shown (and confirmed) one by one; a Markdown summary at the end."""
        from chaoslab.errors import InvalidInput
        from chaoslab.scheduler.gameday import run_gameday
        from chaoslab.scheduler.scenario import load_scenario

        try:
            sc = load_scenario(scenario)
        except InvalidInput as exc:
            _fail([str(p) for p in exc.problems])
        if sc.monkey is not None:
            _fail([f"{scenario}: a monkey scenario has no steps; run it with `chaoslab schedule daemon`"])
        st = _store(store)
        try:
            result = run_gameday(
                sc,
                store=st,
                runs_root=_runs_root(runs_dir),
                out=sys.stdout,
                confirm=confirm,
                check_gates=not no_gates,
                home=_home(),
            )
        finally:
            st.close()
        if result.refused is not None:
            click.echo(f"refused: {result.refused.line()}", err=True)
            sys.exit(ExitCode.ABORTED)
        sys.exit(int(result.verdict.exit_code))

    @main.group()
    def export() -> None:
        """Export scenarios to other schedulers."""

    @export.command("cronjob")
    @click.argument("scenario", type=click.Path(dir_okay=False, readable=False))
    @click.option(
        "--image", default="chaoslab:latest", show_default=True, help="Container image with chaoslab."
    )
    @click.option("--namespace", default=None, help="Namespace of the objects [default: none set].")
    @click.option("--name", default=None, help="Object name [default: chaoslab-SCENARIO].")
    @click.option(
        "--secret",
        default="chaoslab-store",
        show_default=True,
        help="Secret holding the store URL (PostgreSQL, shared by every pod).",
    )
    @click.option("--secret-key", default="url", show_default=True, help="Key of the store URL in --secret.")
    @click.option(
        "--state-size",
        default="1Gi",
        show_default=True,
        help="Size of the PersistentVolumeClaim holding CHAOSLAB_HOME (ledger, locks, run directories).",
    )
    @click.option(
        "--storage-class", default=None, help="storageClassName of that claim [default: the cluster's]."
    )
    @click.option(
        "--state-claim",
        default=None,
        metavar="NAME",
        help="Mount this existing PersistentVolumeClaim instead of writing one.",
    )
    @click.option(
        "--out-file",
        "out_file",
        default=None,
        type=OutputFile(allow_dash=True),
        help="Write the manifests here [default: stdout].",
    )
    @click.option(
        "-o",
        "--output",
        "legacy_out",
        default=None,
        hidden=True,
        type=OutputFile(allow_dash=True),
        help="Deprecated spelling of --out-file (--output is a format option in every other command).",
    )
    def export_cronjob(
        scenario: str,
        image: str,
        namespace: str | None,
        name: str | None,
        secret: str,
        secret_key: str,
        state_size: str,
        storage_class: str | None,
        state_claim: str | None,
        out_file: str | None,
        legacy_out: str | None,
    ) -> None:
        """Write a ConfigMap, a PersistentVolumeClaim for chaoslab's state and a CronJob
        (concurrencyPolicy from the scenario's concurrency, Forbid by default) that run the
        scenario in Kubernetes; a dead pod's faults are recovered by the next pod."""
        from chaoslab.errors import InvalidInput
        from chaoslab.scheduler.export import ExportError, manifests, render
        from chaoslab.scheduler.scenario import load_scenario

        try:
            sc = load_scenario(scenario)
            text = render(
                manifests(
                    sc,
                    image=image,
                    namespace=namespace,
                    secret=secret,
                    secret_key=secret_key,
                    name=name,
                    state_size=state_size,
                    storage_class=storage_class,
                    state_claim=state_claim,
                )
            )
        except InvalidInput as exc:
            _fail([str(p) for p in exc.problems])
        except ExportError as exc:
            _fail([f"{scenario}: {exc}"])
        if legacy_out is not None:
            click.echo("warning: -o/--output FILE is deprecated; use --out-file FILE", err=True)
        output = out_file or legacy_out or "-"
        if output == "-":
            click.echo(text, nl=False)
        else:
            Path(output).parent.mkdir(parents=True, exist_ok=True)
            Path(output).write_text(text, "utf-8")
            click.echo(f"wrote {output}", err=True)


def _key(slot: Any) -> str:
    from chaoslab.scheduler.triggers import slot_key

    return slot_key(slot)
