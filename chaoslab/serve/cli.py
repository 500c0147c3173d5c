"""``chaoslab serve``: start the control room (see ``chaoslab.serve``)."""

from __future__ import annotations

import os
import secrets
import socket
import sys
from pathlib import Path

import click

from chaoslab.clitypes import Duration
from chaoslab.verdict import ExitCode

SERVE_HELP = """\b
Pages:
  /          Now: runs in progress with live SLI charts, active faults (open ledger
             entries with their lease), the guard's state, locks
  /history   runs with verdicts (filter by experiment, tag, verdict), reports, gate scores
  /calendar  next slots of every scenario, windows, blackouts, misfires
  /budgets   error budget left and burn rates per SLO (from Prometheus)
  /halt      the big red button (and release), with the audit log

\b
Authentication: a token from $CHAOSLAB_SERVE_TOKEN or --token-file, else one is made
up and printed at start-up. Halt and release always need it (log in at /login, HTTP
Basic with the token as password, or 'Authorization: Bearer TOKEN'); on any bind but
loopback every page needs it, and the token must be given (not made up). Actions are
recorded in CHAOSLAB_HOME/serve-audit.ndjson.
"""


def _token(token_file: str | None, host_is_loopback: bool) -> tuple[str, bool]:
    """(token, generated)."""
    if token_file:
        try:
            token = Path(token_file).read_text("utf-8").strip()
        except OSError as exc:
            _fail(f"--token-file {token_file}: {exc.strerror}")
        if len(token) < 16:
            _fail(f"--token-file {token_file}: the token must be at least 16 characters")
        return token, False
    env = os.environ.get("CHAOSLAB_SERVE_TOKEN", "").strip()
    if env:
        if len(env) < 16:
            _fail("CHAOSLAB_SERVE_TOKEN: the token must be at least 16 characters")
        return env, False
    if not host_is_loopback:
        _fail("serving beyond loopback needs a token: set CHAOSLAB_SERVE_TOKEN or give --token-file")
    return secrets.token_urlsafe(24), True


def _fail(message: str) -> None:
    click.echo(f"invalid input (1 problem):\n  • {message}", err=True)
    sys.exit(ExitCode.INVALID_INPUT)


def register(main: click.Group) -> None:
    @main.command(epilog=SERVE_HELP)
    @click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
    @click.option(
        "--port",
        default=8765,
        show_default=True,
        type=click.IntRange(0, 65535),
        help="Port (0: any free one).",
    )
    @click.option(
        "--runs",
        "runs",
        multiple=True,
        type=click.Path(file_okay=False),
        help="Directories holding run directories, searched 4 levels deep "
        "[default: ./chaoslab-runs and CHAOSLAB_HOME/scheduler/runs].",
    )
    @click.option(
        "--scenarios",
        "-s",
        multiple=True,
        type=click.Path(),
        help="Scenario files or directories for the calendar [default: $CHAOSLAB_SCENARIOS or ./scenarios].",
    )
    @click.option(
        "--store",
        default=None,
        metavar="URL",
        help="Scheduler store for misfires [default: $CHAOSLAB_STORE or SQLite in CHAOSLAB_HOME].",
    )
    @click.option(
        "--slo",
        "slo_files",
        multiple=True,
        type=click.Path(dir_okay=False),
        help="SLO file (OpenSLO v1 or concise) whose budget the Budgets page shows; repeatable.",
    )
    @click.option(
        "--prometheus",
        envvar="CHAOSLAB_PROMETHEUS_URL",
        default=None,
        metavar="URL",
        help="Prometheus base URL for the budgets [default: each SLO file's data source].",
    )
    @click.option(
        "--token-file",
        type=click.Path(dir_okay=False),
        default=None,
        help="File holding the access token [default: $CHAOSLAB_SERVE_TOKEN, else one is made up].",
    )
    @click.option(
        "--halt-grace",
        default="10s",
        type=Duration(max_s=600),
        show_default=True,
        help="How long a halt waits for runs to revert their own faults before reverting them itself.",
    )
    def serve(
        host: str,
        port: int,
        runs: tuple[str, ...],
        scenarios: tuple[str, ...],
        store: str | None,
        slo_files: tuple[str, ...],
        prometheus: str | None,
        token_file: str | None,
        halt_grace: float,
    ) -> None:
        """The control room: a web view of runs, game days and budgets, with the big red button.

        Needs the 'serve' extra (pip install 'chaoslab[serve]'). Bound to 127.0.0.1 by
        default; stop it with Ctrl-C.
        """
        try:
            import uvicorn

            from chaoslab.serve.app import Control, create_app, is_loopback
        except ImportError as exc:
            click.echo(
                f"error: chaoslab serve needs the 'serve' extra: pip install 'chaoslab[serve]' ({exc})",
                err=True,
            )
            sys.exit(ExitCode.ERROR)
        from chaoslab.paths import StatePaths
        from chaoslab.serve.auth import Auth
        from chaoslab.serve.views import Sources

        home = StatePaths.from_environment().home  # the one read of CHAOSLAB_HOME; passed down
        loopback = is_loopback(host)
        token, generated = _token(token_file, loopback)
        chosen = scenarios or tuple(
            p for p in os.environ.get("CHAOSLAB_SCENARIOS", "scenarios").split(os.pathsep) if p
        )
        missing = [s for s in slo_files if not Path(s).is_file()]
        if missing:
            _fail(f"--slo {missing[0]}: no such file")
        sources = Sources(
            home=home,
            run_roots=tuple(Path(r) for r in runs)
            or (Path.cwd() / "chaoslab-runs", home / "scheduler" / "runs"),
            scenarios=tuple(Path(s) for s in chosen),
            store_url=store or os.environ.get("CHAOSLAB_STORE") or None,
            slo_files=tuple(Path(s) for s in slo_files),
            prometheus_url=prometheus,
        )
        control = Control(sources=sources, auth=Auth(token), open_views=loopback, halt_grace_s=halt_grace)
        control.masker.add(token)  # never echoed on a page
        try:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host.strip("[]"), port))
            sock.listen(128)
        except (OSError, UnicodeError) as exc:
            _fail(f"--host {host} --port {port}: cannot listen: {exc}")
        bound = sock.getsockname()[1]
        shown = f"[{host.strip('[]')}]" if family == socket.AF_INET6 else host
        # The ready line: the socket already listens, so a client may connect from now on.
        click.echo(f"control room on http://{shown}:{bound}/ (Ctrl-C to stop)", err=True)
        if generated:
            # Past the output masker on purpose: the token is masked on every page, not here.
            err = sys.__stderr__ or sys.stderr
            err.write(f"token for halt/release (log in at /login): {token}\n")
            err.flush()
        config = uvicorn.Config(
            create_app(control),
            log_level="warning",
            access_log=False,
            lifespan="off",
            ws="none",
            timeout_graceful_shutdown=2,
        )
        uvicorn.Server(config).run(sockets=[sock])
