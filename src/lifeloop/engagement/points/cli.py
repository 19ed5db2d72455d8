"""``lifeloop points …`` (rules, award, spend, balance, history, new-user tasks) and ``lifeloop checkin …``
(check in, make up, streak, settings).

A customer is a profile id (``42``) or an identity (``user_id:ann``, ``email:ann@example.com``). Award,
spend and make-up take ``--key``: the same key again shows the first result and changes nothing.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from sqlalchemy import Connection

from lifeloop.cli_support import console, explains_errors, fail, open_engine, print_json, read_yaml
from lifeloop.workspaces.service import workspace_id_of

points_app = typer.Typer(
    help="Points (积分): earn rules, award, spend, balances, new-user tasks.", no_args_is_help=True
)
checkin_app = typer.Typer(
    help="Daily check-in (每日签到): check in, make up (补签), streaks.", no_args_is_help=True
)

WorkspaceOption = Annotated[str, typer.Option("--workspace", "-w", help="Workspace slug or id.")]
CustomerArgument = Annotated[str, typer.Argument(help="A profile id, or kind:value such as user_id:ann.")]
KeyOption = Annotated[str, typer.Option("--key", help="Idempotency key: the same key again changes nothing.")]


def _profile(conn: Connection, workspace_id: int, customer: str) -> int:
    from lifeloop.profiles.service import find_by_identity, resolve_profile_id

    if customer.isdigit():
        return resolve_profile_id(conn, workspace_id, int(customer))
    kind, sep, value = customer.partition(":")
    if not sep or not value:
        fail(f"{customer!r} is neither a profile id nor kind:value such as user_id:ann")
    return find_by_identity(conn, workspace_id, kind, value)


def _show_section(workspace: str, section: str) -> None:
    from lifeloop.engagement.points.settings import get_settings
    from lifeloop.store.engine import connect

    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    with connect(engine) as conn:
        print_json(get_settings(conn, ws).section(section))


def _save_section(workspace: str, section: str, path: Path) -> None:
    from lifeloop.engagement.points.settings import save_section
    from lifeloop.store.engine import transaction
    from lifeloop.store.schema import utcnow

    values = read_yaml(path)
    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    print_json(transaction(engine, lambda conn: save_section(conn, ws, section, values, now=utcnow())))


# Points ------------------------------------------------------------------------------------------------
@points_app.command("rules")
@explains_errors
def rules_command(workspace: WorkspaceOption) -> None:
    """The earn rules and validity, as JSON (defaults filled in)."""
    _show_section(workspace, "rules")


@points_app.command("set-rules")
@explains_errors
def set_rules_command(
    path: Annotated[Path, typer.Argument(help="The rules, YAML or JSON; - reads standard input.")],
    workspace: WorkspaceOption,
) -> None:
    """Replace the earn rules (what the file leaves out takes its default)."""
    _save_section(workspace, "rules", path)


@points_app.command("award")
@explains_errors
def award_command(
    customer: CustomerArgument,
    points: Annotated[int, typer.Argument(help="How many points.")],
    workspace: WorkspaceOption,
    key: KeyOption,
    reason: Annotated[str, typer.Option(help="Shown in the customer's history.")] = "awarded by an operator",
    expires_at: Annotated[
        datetime | None, typer.Option(help="When they expire (UTC); default: the validity rule.")
    ] = None,
) -> None:
    """Give a customer points."""
    from datetime import UTC

    from lifeloop.engagement.points.ledger import award_points
    from lifeloop.store.engine import transaction
    from lifeloop.store.schema import utcnow

    expiry = expires_at.replace(tzinfo=UTC) if expires_at and expires_at.tzinfo is None else expires_at
    engine = open_engine()
    ws = workspace_id_of(engine, workspace)

    def work(conn: Connection) -> Any:
        pid = _profile(conn, ws, customer)
        return award_points(
            conn, ws, pid, points, key=f"manual:{key}", reason=reason, now=utcnow(), expires_at=expiry
        )

    entry = transaction(engine, work)
    console.print(f"profile {entry.profile_id}: +{entry.points} points, balance {entry.balance_after}")


@points_app.command("spend")
@explains_errors
def spend_command(
    customer: CustomerArgument,
    points: Annotated[int, typer.Argument(help="How many points.")],
    workspace: WorkspaceOption,
    key: KeyOption,
    reason: Annotated[str, typer.Option(help="Shown in the customer's history.")] = "spent by an operator",
) -> None:
    """Take points from a customer; refused when the balance is short."""
    from lifeloop.engagement.points.ledger import spend_points
    from lifeloop.store.engine import transaction
    from lifeloop.store.schema import utcnow

    engine = open_engine()
    ws = workspace_id_of(engine, workspace)

    def work(conn: Connection) -> Any:
        pid = _profile(conn, ws, customer)
        return spend_points(conn, ws, pid, points, key=f"manual:{key}", reason=reason, now=utcnow())

    entry = transaction(engine, work)
    console.print(f"profile {entry.profile_id}: -{entry.points} points, balance {entry.balance_after}")


@points_app.command("balance")
@explains_errors
def balance_command(customer: CustomerArgument, workspace: WorkspaceOption) -> None:
    """A customer's spendable balance and lifetime totals."""
    from lifeloop.engagement.points import ledger
    from lifeloop.store.engine import connect
    from lifeloop.store.schema import utcnow

    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    with connect(engine) as conn:
        pid = _profile(conn, ws, customer)
        totals = ledger.account_totals(conn, ws, pid)
        spendable = ledger.balance(conn, ws, pid, now=utcnow())
    console.print(
        f"profile {pid}: balance {spendable} (earned {totals['earned']}, spent {totals['spent']}, "
        f"expired {totals['expired']})"
    )


@points_app.command("history")
@explains_errors
def history_command(
    customer: CustomerArgument,
    workspace: WorkspaceOption,
    limit: Annotated[int, typer.Option(min=1, max=500, help="How many entries, newest first.")] = 20,
) -> None:
    """A customer's points entries, newest first."""
    from lifeloop.engagement.points import ledger
    from lifeloop.store.engine import connect

    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    with connect(engine) as conn:
        pid = _profile(conn, ws, customer)
        entries = ledger.history(conn, ws, pid, limit=limit)
    table = Table("at", "change", "balance", "reason", "expires")
    for e in entries:
        change = f"+{e.points}" if e.kind == "earn" else f"-{e.points}"
        expires = e.expires_at.strftime("%Y-%m-%d") if e.expires_at else "—"
        table.add_row(e.at.strftime("%Y-%m-%d %H:%M"), change, str(e.balance_after), e.reason, expires)
    console.print(table)


@points_app.command("tasks")
@explains_errors
def tasks_command(customer: CustomerArgument, workspace: WorkspaceOption) -> None:
    """A customer's new-user tasks, as JSON."""
    from lifeloop.engagement.points.tasks import task_progress
    from lifeloop.store.engine import connect
    from lifeloop.store.schema import utcnow

    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    with connect(engine) as conn:
        print_json(task_progress(conn, ws, _profile(conn, ws, customer), now=utcnow()))


@points_app.command("task-settings")
@explains_errors
def task_settings_command(workspace: WorkspaceOption) -> None:
    """The new-user tasks' settings, as JSON."""
    _show_section(workspace, "tasks")


@points_app.command("set-task-settings")
@explains_errors
def set_task_settings_command(
    path: Annotated[Path, typer.Argument(help="The settings, YAML or JSON; - reads standard input.")],
    workspace: WorkspaceOption,
) -> None:
    """Replace the new-user tasks' settings."""
    _save_section(workspace, "tasks", path)


# Check-in --------------------------------------------------------------------------------------------------
@checkin_app.command("in")
@explains_errors
def checkin_command(customer: CustomerArgument, workspace: WorkspaceOption) -> None:
    """Check a customer in for today (the workspace's day); a second time the same day changes nothing."""
    from lifeloop.engagement.points.checkin import check_in
    from lifeloop.store.engine import transaction
    from lifeloop.store.schema import utcnow

    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    done = transaction(engine, lambda conn: check_in(conn, ws, _profile(conn, ws, customer), now=utcnow()))
    if done.already:
        console.print(f"profile {done.profile_id} already checked in on {done.day}: streak {done.streak}")
    else:
        console.print(
            f"profile {done.profile_id} checked in on {done.day}: streak {done.streak}, +{done.points} points"
        )


@checkin_app.command("makeup")
@explains_errors
def makeup_command(
    customer: CustomerArgument,
    day: Annotated[str, typer.Argument(help="The missed day, YYYY-MM-DD on the workspace's calendar.")],
    workspace: WorkspaceOption,
    key: KeyOption,
) -> None:
    """Make up a missed day (补签), paid in points."""
    from lifeloop.engagement.points.checkin import make_up
    from lifeloop.store.engine import transaction
    from lifeloop.store.schema import utcnow

    try:
        missed = date.fromisoformat(day)
    except ValueError:
        fail(f"{day!r} is not a day; write it as YYYY-MM-DD")
    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    done = transaction(
        engine, lambda conn: make_up(conn, ws, _profile(conn, ws, customer), missed, key=key, now=utcnow())
    )
    console.print(
        f"profile {done.profile_id} made up {done.day} for {done.cost} points: streak {done.streak}"
    )


@checkin_app.command("streak")
@explains_errors
def streak_command(customer: CustomerArgument, workspace: WorkspaceOption) -> None:
    """A customer's check-in state (streak, next bonus, days that can be made up), as JSON."""
    from lifeloop.engagement.points.checkin import streak_summary
    from lifeloop.store.engine import connect
    from lifeloop.store.schema import utcnow

    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    with connect(engine) as conn:
        print_json(streak_summary(conn, ws, _profile(conn, ws, customer), now=utcnow()))


@checkin_app.command("config")
@explains_errors
def config_command(workspace: WorkspaceOption) -> None:
    """The check-in settings, as JSON."""
    _show_section(workspace, "checkin")


@checkin_app.command("set-config")
@explains_errors
def set_config_command(
    path: Annotated[Path, typer.Argument(help="The settings, YAML or JSON; - reads standard input.")],
    workspace: WorkspaceOption,
) -> None:
    """Replace the check-in settings (streak rewards, make-up cost and look-back, the request event)."""
    _save_section(workspace, "checkin", path)
