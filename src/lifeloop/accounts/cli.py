"""``lifeloop user …``: console accounts from the command line (the first admin, a forgotten password)."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.table import Table

from lifeloop.cli_support import console, explains_errors, open_engine

user_app = typer.Typer(help="Console users and their roles.", no_args_is_help=True)


def _password(value: str | None) -> str:
    """From the option, else LIFELOOP_PASSWORD, else a prompt (hidden, asked twice)."""
    if value:
        return value
    if os.environ.get("LIFELOOP_PASSWORD"):
        return os.environ["LIFELOOP_PASSWORD"]
    return str(typer.prompt("password", hide_input=True, confirmation_prompt=True))


@user_app.command("create")
@explains_errors
def user_create(
    email: Annotated[str, typer.Argument(help="The e-mail the user signs in with.")],
    workspace: Annotated[str, typer.Option("--workspace", "-w", help="Workspace slug or id.")],
    role: Annotated[str, typer.Option(help="admin, operator, analyst or viewer.")] = "admin",
    name: Annotated[str | None, typer.Option(help="Display name (default: the e-mail's local part).")] = None,
    password: Annotated[
        str | None, typer.Option(help="At least 10 characters; default LIFELOOP_PASSWORD, else a prompt.")
    ] = None,
    locale: Annotated[str, typer.Option(help="zh-TW, zh-CN or en.")] = "zh-TW",
) -> None:
    """Create a console user with a role in a workspace (an existing user just gets the role)."""
    from lifeloop.accounts.service import add_member, create_user, record_action, user_by_email
    from lifeloop.errors import NotFound
    from lifeloop.workspaces.service import get_workspace

    engine = open_engine()
    with engine.begin() as conn:
        ws = get_workspace(conn, workspace)
        try:
            user = user_by_email(conn, email)
            created = False
        except NotFound:
            user = create_user(conn, email=email, password=_password(password), name=name, locale=locale)
            created = True
        add_member(conn, ws.id, user_id=user.id, role=role)
        record_action(conn, ws.id, user_id=None, action="member.set", target=user.email,
                      detail={"role": role, "by": "cli"})  # fmt: skip
    what = "created" if created else "exists"
    console.print(f"user [bold]{user.email}[/] {what}; {role} in workspace {ws.slug}")


@user_app.command("password")
@explains_errors
def user_password(
    email: Annotated[str, typer.Argument(help="The user's e-mail.")],
    password: Annotated[str | None, typer.Option(help="The new password; default a prompt.")] = None,
) -> None:
    """Set a user's password (their sessions end)."""
    from lifeloop.accounts.service import set_password, user_by_email

    engine = open_engine()
    with engine.begin() as conn:
        user = user_by_email(conn, email)
        set_password(conn, user.id, _password(password))
    console.print(f"password of [bold]{user.email}[/] changed; their sessions have ended")


@user_app.command("list")
@explains_errors
def user_list(
    workspace: Annotated[str, typer.Option("--workspace", "-w", help="Workspace slug or id.")],
) -> None:
    """The workspace's members and roles."""
    from lifeloop.accounts.service import list_members
    from lifeloop.workspaces.service import get_workspace

    engine = open_engine()
    with engine.connect() as conn:
        members = list_members(conn, get_workspace(conn, workspace).id)
    table = Table("e-mail", "name", "role", "locale")
    for member in members:
        table.add_row(member.user.email, member.user.name, member.role, member.user.locale)
    console.print(table)
