"""The command line's contract: exit codes pass through, errors are one line, help lists the commands."""

from __future__ import annotations

import click
import pytest

from bundler import cli


@pytest.fixture
def extra_command(monkeypatch):
    @click.command("exit-three")
    @click.pass_context
    def exit_three(ctx: click.Context) -> None:
        ctx.exit(3)

    monkeypatch.setitem(cli.COMMANDS, "exit-three", "tests.test_cli:_EXIT_THREE")
    monkeypatch.setattr(__import__("tests.test_cli").test_cli, "_EXIT_THREE", exit_three, raising=False)


def test_ctx_exit_code_reaches_the_process(extra_command):
    with pytest.raises(SystemExit) as exc:
        cli.main(["exit-three"])
    assert exc.value.code == 3


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in ("inspect", "verify", "validate", "synth"):
        assert name in out


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["frobnicate"])
    assert exc.value.code == 2
    assert "Traceback" not in capsys.readouterr().err
