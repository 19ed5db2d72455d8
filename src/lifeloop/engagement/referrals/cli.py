"""``lifeloop referrals …``: the programme from a file, invite codes, attributions, a customer's
referrals and the leaderboard."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lifeloop.cli_support import (
    console,
    explains_errors,
    fail,
    open_engine,
    print_json,
    profile_or_user_id,
    read_yaml,
)
from lifeloop.workspaces.service import workspace_id_of

referrals_app = typer.Typer(
    help="Referrals (老带新): invite codes, rewards, the leaderboard.", no_args_is_help=True
)
program_app = typer.Typer(help="The referral programme's landing page and rewards.", no_args_is_help=True)
referrals_app.add_typer(program_app, name="program")
WorkspaceOption = Annotated[str, typer.Option("--workspace", "-w", help="Workspace slug or id.")]
ProfileArgument = Annotated[str, typer.Argument(help="A profile id, or a user id.")]


@program_app.command("show")
@explains_errors
def show_program(workspace: WorkspaceOption) -> None:
    """The workspace's referral programme, as JSON."""
    from lifeloop.engagement.referrals import service
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
    """Save the landing URL and the rewards of both sides (checked first: a wrong field changes nothing)."""
    from lifeloop.engagement.referrals import service
    from lifeloop.store.schema import utcnow

    config = read_yaml(path)
    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    with engine.begin() as conn:
        program = service.set_program(conn, ws, config, now=utcnow())
    console.print(f"referral programme saved: links land on {program.landing_url}")


@referrals_app.command("code")
@explains_errors
def code_command(profile: ProfileArgument, workspace: WorkspaceOption) -> None:
    """A customer's invite code and link (made on first asking)."""
    from lifeloop.config import get_settings
    from lifeloop.engagement.referrals import service
    from lifeloop.store.schema import utcnow

    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    with engine.begin() as conn:
        program = service.require_program(conn, ws)
        code = service.code_for(conn, ws, profile_or_user_id(conn, ws, profile), now=utcnow())
    link = service.link_for(program, code, get_settings().public_url)
    console.print(code if link is None else f"{code}  {link}")


@referrals_app.command("attribute")
@explains_errors
def attribute_command(
    profile: ProfileArgument,
    code: Annotated[str, typer.Argument(help="The referrer's invite code.")],
    workspace: WorkspaceOption,
    key: Annotated[str, typer.Option(help="Idempotency key: the same key again changes nothing.")],
    device: Annotated[str | None, typer.Option(help="The new customer's device id.")] = None,
) -> None:
    """Attribute a new customer to a referrer's code, as an event carrying referral_code would."""
    from lifeloop.engagement.referrals import service
    from lifeloop.store.schema import utcnow

    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    with engine.begin() as conn:
        referral = service.attribute(
            conn,
            ws,
            profile_or_user_id(conn, ws, profile),
            code,
            message_id=f"api:{key}",
            device_id=device,
            now=utcnow(),
            strict=True,
        )
    assert referral is not None  # strict: refused with an error instead
    if referral["status"] == "rejected":
        console.print(f"referral {referral['id']} rejected: {referral['reason']}")
    else:
        console.print(f"referral {referral['id']} {referral['status']} (referrer {referral['referrer_id']})")


@referrals_app.command("show")
@explains_errors
def show_command(profile: ProfileArgument, workspace: WorkspaceOption) -> None:
    """A customer's code, whom they referred and who referred them, as JSON."""
    from lifeloop.engagement.referrals import service
    from lifeloop.store.engine import connect

    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    with connect(engine) as conn:
        print_json(service.referrals_of(conn, ws, profile_or_user_id(conn, ws, profile)))


@referrals_app.command("leaderboard")
@explains_errors
def leaderboard_command(
    workspace: WorkspaceOption,
    days: Annotated[int, typer.Option(help="Count referrals completed in the last N days.")] = 30,
    limit: Annotated[int, typer.Option(help="How many referrers to show.")] = 20,
) -> None:
    """Referrers by completed referrals in the window, most first."""
    from lifeloop.engagement.referrals import service
    from lifeloop.store.engine import connect
    from lifeloop.store.schema import utcnow

    if days < 1:
        fail("--days must be at least 1")
    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    until = utcnow()
    with connect(engine) as conn:
        rows = service.leaderboard(conn, ws, since=until - timedelta(days=days), until=until, limit=limit)
    table = Table("rank", "profile", "user id", "completed", "last completed")
    for r in rows:
        table.add_row(
            str(r["rank"]),
            str(r["profile_id"]),
            r["user_id"] or "—",
            str(r["completed"]),
            r["last_completed_at"].strftime("%Y-%m-%d %H:%M"),
        )
    console.print(table)
