"""Run the real ``lifeloop`` command in a subprocess, as an operator would."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass


@dataclass
class CliResult:
    exit_code: int
    output: str  # stdout and stderr together
    stdout: str


def run_cli(args: list[str], database_url: str, **env: str) -> CliResult:
    environment = {**os.environ, "LIFELOOP_DATABASE_URL": database_url, "COLUMNS": "200", **env}
    done = subprocess.run(
        [sys.executable, "-m", "lifeloop.cli", *args],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
        timeout=120,
    )
    return CliResult(exit_code=done.returncode, output=done.stdout + done.stderr, stdout=done.stdout)
