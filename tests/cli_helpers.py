"""Run the real ``lifeloop`` command as an operator would: its arguments parsed by the same Typer app,
its environment, exit code and output as a terminal would see them.

``run_cli`` runs it in this process (about 1.7 s less per command than a new interpreter importing
everything again); ``run_cli_process`` in a subprocess, for what only a separate process shows (the
installed entry point, an interpreter's start-up, signals).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import traceback
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner

WIDTH = 200  # columns of the terminal the output is laid out for, as COLUMNS gives a subprocess


@dataclass
class CliResult:
    exit_code: int
    output: str  # stdout and stderr together
    stdout: str


def _environment(database_url: str, env: dict[str, str]) -> dict[str, str]:
    """The command's own variables: the database, and an analytics store of that database's own (unless
    ``env`` names one), so tests never share one."""
    analytics = Path(tempfile.gettempdir()) / "lifeloop-test-analytics"
    analytics /= hashlib.sha1(database_url.encode()).hexdigest() + ".duckdb"
    return {
        "LIFELOOP_DATABASE_URL": database_url,
        "LIFELOOP_ANALYTICS_PATH": str(analytics),
        "COLUMNS": str(WIDTH),
        **env,
    }


def run_cli(args: list[str], database_url: str, **env: str) -> CliResult:
    """``lifeloop *args`` on ``database_url``, in this process, through ``lifeloop.cli.main``'s handling:
    a domain error is one sentence and exit code 1, an unexpected exception a traceback and exit code 1."""
    from lifeloop import cli, cli_support
    from lifeloop.config import get_settings
    from lifeloop.errors import LifeloopError

    runner = CliRunner()
    code = 0
    with ExitStack() as stack:
        stdout, _stderr, output = stack.enter_context(runner.isolation(env=_environment(database_url, env)))
        for console in (cli_support.console, cli_support.err):  # made at import, before COLUMNS was set
            stack.callback(setattr, console, "_width", console._width)
            console.width = WIDTH
        get_settings.cache_clear()  # the settings are read again from this environment…
        stack.callback(get_settings.cache_clear)  # …and the test's own come back afterwards
        try:
            cli.app(args=args, prog_name="lifeloop")
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        except LifeloopError as error:
            cli_support.err.print(f"[bold red]error:[/] {error.message}")
            code = 1
        except Exception:
            traceback.print_exc(file=sys.stderr)
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        text, out = output.getvalue(), stdout.getvalue()
    return CliResult(exit_code=code, output=text.decode(), stdout=out.decode())


def run_cli_process(args: list[str], database_url: str, **env: str) -> CliResult:
    """``lifeloop *args`` on ``database_url`` in a new interpreter."""
    done = subprocess.run(
        [sys.executable, "-m", "lifeloop.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **_environment(database_url, env)},
        check=False,
        timeout=120,
    )
    return CliResult(exit_code=done.returncode, output=done.stdout + done.stderr, stdout=done.stdout)
