"""Every ``chaoslab`` command, walked through click: each option has help text, help
texts carry no reStructuredText backticks, one option name means one thing across
commands, and a command's --help shows only the exit codes that command can return."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import click
from click.testing import CliRunner

from chaoslab.cli import main


def _commands() -> Iterator[tuple[str, click.Command]]:
    ctx = click.Context(main)
    stack: list[tuple[str, click.Command]] = [("chaoslab", main)]
    while stack:
        path, cmd = stack.pop()
        yield path, cmd
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                assert sub is not None, f"{path} {name} is listed but cannot be loaded"
                stack.append((f"{path} {name}", sub))


def _options(cmd: click.Command) -> Iterator[click.Option]:
    for p in cmd.params:
        if isinstance(p, click.Option):
            yield p


def test_the_walk_reaches_every_command_group() -> None:
    paths = {p for p, _ in _commands()}
    # One command of each lazily registered module, so the walk cannot silently stop early.
    for expected in (
        "chaoslab run",
        "chaoslab gate",
        "chaoslab slo rules",
        "chaoslab lab up",
        "chaoslab halt",
    ):
        assert expected in paths
    assert len(paths) > 20


def test_every_option_has_help_text() -> None:
    missing = [
        f"{path} {opt.opts[0]}"
        for path, cmd in _commands()
        for opt in _options(cmd)
        if not (opt.help or "").strip() and opt.name != "help"
    ]
    assert missing == []


def test_no_restructuredtext_backticks_in_help() -> None:
    runner = CliRunner()
    offenders = []
    for path, _cmd in _commands():
        args = path.split()[1:]
        result = runner.invoke(main, [*args, "--help"], prog_name="chaoslab")
        assert result.exit_code == 0, (path, result.output)
        if "`" in result.output:
            lines = [line for line in result.output.splitlines() if "`" in line]
            offenders.append(f"{path}: {lines}")
    assert offenders == []


def test_one_meaning_per_option_name() -> None:
    """An option spelling (-o, --output, ...) is a format choice everywhere or a path everywhere."""
    meaning: dict[str, set[str]] = {}
    for path, cmd in _commands():
        for opt in _options(cmd):
            if opt.hidden:
                # A hidden option is only an old spelling kept for scripts; it must say so.
                assert (opt.help or "").startswith("Deprecated"), (path, opt.opts)
                continue
            kind = "choice" if isinstance(opt.type, click.Choice) else type(opt.type).__name__
            for spelling in [*opt.opts, *opt.secondary_opts]:
                meaning.setdefault(spelling, set()).add(kind)
    assert meaning["--output"] == {"choice"}
    mixed = {k: v for k, v in meaning.items() if len(v) > 1 and k not in ("--help", "-h")}
    assert mixed == {}, mixed


def test_validate_and_plan_help_do_not_show_the_runs_verdict_table() -> None:
    runner = CliRunner()
    for command in ("validate", "plan"):
        out = runner.invoke(main, [command, "--help"], prog_name="chaoslab").output
        assert "deviated" not in out and "not clean" not in out, out
        assert "2" in out and "invalid input" in out, out
    run_help = runner.invoke(main, ["run", "--help"], prog_name="chaoslab").output
    assert "deviated" in run_help and "not clean" in run_help


def test_the_old_file_spelling_still_works_with_a_deprecation_note(tmp_path: Path) -> None:
    slo = tmp_path / "slo.yaml"
    slo.write_text(
        "slos:\n  - name: api\n    objective: 0.99\n    window: 30d\n"
        "    ratio: {bad: 'http_requests_total{code=~\"5..\"}', total: http_requests_total}\n"
    )
    runner = CliRunner()
    for spelling in ("-o", "--output", "--out-file"):
        out = tmp_path / f"rules{spelling}.yaml"
        result = runner.invoke(main, ["slo", "rules", str(slo), spelling, str(out)], prog_name="chaoslab")
        assert result.exit_code == 0, result.output
        assert "record: slo:sli_error:ratio_rate5m" in out.read_text()
        deprecated = "deprecated; use --out-file" in result.stderr
        assert deprecated == (spelling != "--out-file")
