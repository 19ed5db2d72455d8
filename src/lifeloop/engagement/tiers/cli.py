"""``lifeloop tiers …``: the ladder from a file, a customer's tier and history, reviews due now."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lifeloop.cli_support import (
    console,
    explains_errors,
    open_engine,
    print_json,
    profile_or_user_id,
    read_yaml,
)
from lifeloop.workspaces.service import workspace_id_of

tiers_app = typer.Typer(help="Member tiers (会员等级) and the member day.", no_args_is_help=True)
program_app = typer.Typer(help="The tier ladder and its rules.", no_args_is_help=True)
tiers_app.add_typer(program_app, name="program")
WorkspaceOption = Annotated[str, typer.Option("--workspace", "-w", help="Workspace slug or id.")]
ProfileArgument = Annotated[str, typer.Argument(help="A profile id, or a user id.")]


@program_app.command("show")
@explains_errors
def show_program(workspace: WorkspaceOption) -> None:
    """The workspace's ladder and rules, as JSON."""
    from lifeloop.engagement.tiers import service
    from lifeloop.store.engine import connect

    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    with connect(engine) as conn:
        print_json(service.require_program(conn, ws).as_dict())


@program_app.command("set")
@explains_errors
def set_program(
    path: Annotated[Path, typer.Argument(help="The programme, YAML or JSON; - reads standard input.")],
    workspace: WorkspaceOption,
) -> None:
    """Save the ladder and its rules (checked first: a wrong field changes nothing)."""
    from lifeloop.engagement.tiers import service
    from lifeloop.store.schema import utcnow

    config = read_yaml(path)
    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    with engine.begin() as conn:
        program = service.set_program(conn, ws, config, now=utcnow())
    console.print(f"tier programme saved: {' < '.join(t.name for t in program.tiers)}")


@tiers_app.command("show")
@explains_errors
def show_command(profile: ProfileArgument, workspace: WorkspaceOption) -> None:
    """A customer's tier, since when, the window's figures and the next tier's progress, as JSON."""
    from lifeloop.engagement.tiers import service
    from lifeloop.store.engine import connect
    from lifeloop.store.schema import utcnow

    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    with connect(engine) as conn:
        print_json(service.status(conn, ws, profile_or_user_id(conn, ws, profile), now=utcnow()))


@tiers_app.command("history")
@explains_errors
def history_command(profile: ProfileArgument, workspace: WorkspaceOption) -> None:
    """A customer's tier changes, oldest first, as JSON."""
    from lifeloop.engagement.tiers import service
    from lifeloop.store.engine import connect

    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    with connect(engine) as conn:
        print_json(service.history(conn, ws, profile_or_user_id(conn, ws, profile)))


@tiers_app.command("sweep")
@explains_errors
def sweep_command() -> None:
    """Run the reviews and member days due now (the worker does this every minute)."""
    from lifeloop.engagement.tiers.hooks import sweep
    from lifeloop.store.schema import utcnow

    changed = sweep(open_engine(), utcnow())
    console.print(f"{changed} tier changes and member-day coupons")
