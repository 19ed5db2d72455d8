"""Run the real ``lifeloop`` command in a subprocess, as an operator would."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass
class CliResult:
    exit_code: int
    output: str  # stdout and stderr together
    stdout: str


def run_cli(args: list[str], database_url: str, **env: str) -> CliResult:
    """``lifeloop *args`` on ``database_url``; its analytics store (unless ``env`` names one) is a file of
    that database's own, so tests never share one."""
    analytics = Path(tempfile.gettempdir()) / "lifeloop-test-analytics"
    analytics /= hashlib.sha1(database_url.encode()).hexdigest() + ".duckdb"
    environment = {
        **os.environ,
        "LIFELOOP_DATABASE_URL": database_url,
        "LIFELOOP_ANALYTICS_PATH": str(analytics),
        "COLUMNS": "200",
        **env,
    }
    done = subprocess.run(
        [sys.executable, "-m", "lifeloop.cli", *args],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
        timeout=120,
    )
    return CliResult(exit_code=done.returncode, output=done.stdout + done.stderr, stdout=done.stdout)
