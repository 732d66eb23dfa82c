"""The README's "Your project" section and the project CI job say only what the CLI accepts.

No engine, no network: each toolkit command is parsed by the CLI's own click parser (the
subcommand exists, every option is one it takes, the arguments are complete), without running.
tests/test_project_e2e.py runs the same block for real.
"""

from __future__ import annotations

import functools

import click
import pytest
import typer
from _project_readme import CI_JOB, README, ci_run_commands, ci_yaml_block, project_commands, section, toolkit_argv

from toolkit.cli import app

# What a project's newcomer must see, in the order they need it (the list).
STEPS = (
    "pip install",
    "toolkit init",
    ">> requirements.in",
    "system_packages",
    "toolkit lock",
    "toolkit base",
    "toolkit image build",
    "python train.py",
    "toolkit image check",
    "toolkit registry add",
    "toolkit registry promote",
    "toolkit upgrade-check --lock requirements.lock",
    "toolkit lock --upgrade-package",
    "toolkit upgrade-check --lock candidate.lock",
)


@functools.cache
def _cli() -> click.Command:
    return typer.main.get_command(app)


def parse(argv: list[str]) -> click.Context:
    """Resolve ``argv`` through the CLI's groups and parse the leaf command's options (never invoked)."""
    command = _cli()
    ctx = command.make_context("toolkit", list(argv), resilient_parsing=False)
    while isinstance(command, click.Group):
        # click 8.2 keeps the subcommand's words apart until 9.0 merges them into args.
        words = [*getattr(ctx, "_protected_args", []), *ctx.args]
        name, sub, rest = command.resolve_command(ctx, words)
        assert sub is not None, f"toolkit {' '.join(argv)}: no command {name!r}"  # click raises first
        command = sub
        ctx = command.make_context(name or "", rest, parent=ctx)
    return ctx


def test_the_section_covers_every_step_in_order() -> None:
    commands = [c for c, _ in project_commands(README.read_text())]
    at = -1
    for step in STEPS:
        found = [i for i, c in enumerate(commands) if step in c and i > at]
        assert found, f"the README's 'Your project' block has no {step!r} after step {at}: {commands}"
        at = found[0]


@pytest.mark.parametrize("command", [c for c, _ in project_commands(README.read_text())])
def test_every_toolkit_command_of_the_section_parses(command: str) -> None:
    argv = toolkit_argv(command.split("&&")[0].strip())
    if argv is not None:
        parse(argv)


def test_the_ci_job_is_the_file_and_every_command_parses() -> None:
    text = README.read_text()
    assert ci_yaml_block(text) == CI_JOB.read_text(), "the README shows examples/project-ci.yml verbatim"
    assert "examples/project-ci.yml" in section(text)
    commands = ci_run_commands(CI_JOB.read_text())
    checked = [argv for argv in map(toolkit_argv, commands) if argv is not None]
    assert [a[:2] for a in checked] == [["base"], ["image", "build"], ["image", "train"], ["upgrade-check", "--lock"]]
    for argv in checked:
        parse(argv)
    assert any("pip install 'toolkit[project]'" in c for c in commands)


def test_the_parser_refuses_what_the_cli_refuses() -> None:
    with pytest.raises(click.UsageError):
        parse(["image", "build", "--no-such-flag"])
    with pytest.raises(click.UsageError):
        parse(["image", "no-such-command"])
    with pytest.raises(click.UsageError):
        parse(["registry", "promote"])  # NAME and VERSION missing
