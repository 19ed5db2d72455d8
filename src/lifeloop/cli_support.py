"""What every ``lifeloop`` command shares: consoles, one-sentence errors, the configured store, JSON
output and YAML input."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar

import typer
from rich.console import Console

from lifeloop.config import get_settings
from lifeloop.errors import LifeloopError

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

console = Console()
err = Console(stderr=True, soft_wrap=True)
P = ParamSpec("P")
R = TypeVar("R")


def explains_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn a domain error into a one-sentence message and exit code 1 instead of a traceback."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except LifeloopError as error:
            fail(error.message)

    return wrapper


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def open_engine(*, migrated: bool = True) -> Engine:
    """The configured store, checked to be at the newest schema unless ``migrated`` is False."""
    from sqlalchemy.pool import NullPool

    from lifeloop.store.engine import create_store_engine
    from lifeloop.store.migrate import current_revision, head_revision

    # A command opens few connections; without a pool none is left open when it ends.
    engine = create_store_engine(get_settings(), poolclass=NullPool)
    if migrated and current_revision(engine) != head_revision():
        fail("the database is not migrated to the newest schema; run `lifeloop migrate` first")
    return engine


def print_json(data: Any) -> None:
    """``data`` as indented JSON on standard output (non-ASCII as is, dates and the like as text)."""
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")


def read_yaml(path: Path) -> Any:
    """A YAML (or JSON) file, or standard input when ``path`` is ``-``; fails the command in one sentence
    when it cannot be read or parsed."""
    import yaml

    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except OSError as error:
        fail(f"cannot read {path}: {error.strerror}")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        fail(f"{path} is not YAML or JSON: {str(error).splitlines()[0]}")


def profile_or_user_id(conn: Connection, workspace_id: int, profile: str) -> int:
    """A command's customer argument: digits are taken as the profile id, anything else as a user id."""
    from lifeloop.profiles.service import find_by_identity

    return int(profile) if profile.isdigit() else find_by_identity(conn, workspace_id, "user_id", profile)
