"""The CLI: set-up commands print keys, bad input exits non-zero with a sentence."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import sqlalchemy as sa

from lifeloop.config import Settings
from lifeloop.workspaces.models import sources
from tests.cli_helpers import run_cli, run_cli_process


@pytest.fixture
def cli(settings: Settings):
    return lambda args: run_cli(args, settings.database_url)


def test_workspace_source_and_token(cli, engine: sa.Engine) -> None:
    assert cli(["migrate"]).exit_code == 0
    created = cli(["workspace", "create", "tea", "--name", "茶光", "--timezone", "Asia/Taipei"])
    assert created.exit_code == 0 and "workspace tea created" in created.output
    key = cli(["source", "create", "web", "-w", "tea"])
    assert key.exit_code == 0
    write_key = key.stdout.strip()
    assert write_key.startswith("wk_")
    with engine.connect() as conn:
        stored = conn.execute(
            sa.select(sources.c.write_key_hash).execution_options(cross_workspace=True)
        ).scalar()
    assert write_key not in stored  # only a digest is kept
    token = cli(["token", "create", "ops", "-w", "tea", "--role", "viewer"])
    assert token.exit_code == 0 and token.stdout.strip().startswith("llt_")
    listing = cli(["workspace", "list"])
    assert "茶光" in listing.output and "Asia/Taipei" in listing.output
    assert "web" in cli(["source", "list", "-w", "tea"]).output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["workspace", "create", "Bad Slug"], "slug must be"),
        (["workspace", "create", "ok", "--timezone", "Mars/Olympus"], "unknown time zone"),
        (["source", "create", "web", "-w", "missing"], "no workspace 'missing'"),
        (["token", "create", "x", "-w", "tea", "--role", "god"], "role must be one of"),
    ],
)
def test_bad_input_exits_non_zero_with_a_sentence(
    cli, engine: sa.Engine, args: list[str], message: str
) -> None:
    cli(["workspace", "create", "tea"])
    result = cli(args)
    assert result.exit_code != 0
    assert message in " ".join(result.output.split())


def test_duplicate_workspace_is_refused(cli, engine: sa.Engine) -> None:
    assert cli(["workspace", "create", "tea"]).exit_code == 0
    again = cli(["workspace", "create", "tea"])
    assert again.exit_code != 0 and "already exists" in again.output


def test_unmigrated_database_is_explained(tmp_path) -> None:
    """In a process of its own, as an operator runs it: the sentence and the exit code come through."""
    result = run_cli_process(["workspace", "list"], f"sqlite:///{tmp_path / 'empty.db'}")
    assert result.exit_code != 0 and "lifeloop migrate" in result.output


def test_installed_entry_point_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lifeloop.cli", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    for command in ("migrate", "serve", "import", "demo", "workspace", "source", "token"):
        assert command in result.stdout


@pytest.mark.parametrize(
    ("command", "usage"),
    [
        ([], "lifeloop [OPTIONS] COMMAND [ARGS]..."),
        (["import"], "lifeloop import [OPTIONS] KIND PATH"),
        (["analytics", "metric"], "lifeloop analytics metric [OPTIONS] NAME"),
        (["analytics", "costs"], "lifeloop analytics costs [OPTIONS] FILE"),
        (["workspace", "create"], "lifeloop workspace create [OPTIONS] SLUG"),
    ],
)
def test_help_reads_like_a_click_cli(command: list[str], usage: str) -> None:
    """Arguments upper-case in the usage line, flags (--help included) without a metavar."""
    result = subprocess.run(
        [sys.executable, "-c", "from lifeloop.cli import app; app(prog_name='lifeloop')", *command, "--help"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "COLUMNS": "120"},
    )
    assert result.returncode == 0, result.stderr
    assert f"Usage: {usage}" in result.stdout
    assert "<bool>" not in result.stdout and "{" not in result.stdout
    help_row = next(line for line in result.stdout.splitlines() if "--help" in line)
    assert help_row.split("--help")[1].split() == ["Show", "this", "message", "and", "exit.", "│"]


@pytest.mark.parametrize("command", [["serve"], ["demo"]])
def test_serving_commands_promise_only_what_is_served(command: list[str]) -> None:
    """No web console exists yet, so no help text may point to one."""
    result = run_cli([*command, "--help"], "sqlite://")
    assert result.exit_code == 0, result.output
    assert "console" not in result.stdout.lower()
    if command == ["serve"]:
        assert "/api/v1" in result.stdout and "/docs" in result.stdout
