"""What every ``lifeloop`` command shares: consoles, one-sentence errors, the configured store."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn, ParamSpec, TypeVar

import typer
from rich.console import Console

from lifeloop.config import get_settings
from lifeloop.errors import LifeloopError

if TYPE_CHECKING:
    from sqlalchemy import Engine

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
