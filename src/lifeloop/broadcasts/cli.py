"""``lifeloop broadcasts …``: drafts from a file, estimate, schedule (and watch it go out), cancel, stats."""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from lifeloop.cli_support import console, explains_errors, fail, open_engine, print_json, read_yaml
from lifeloop.workspaces.service import workspace_id_of

broadcasts_app = typer.Typer(
    help="Broadcasts (群发): one message to a segment, tags, stages, tiers or a list of ids.",
    no_args_is_help=True,
)
WorkspaceOption = Annotated[str, typer.Option("--workspace", "-w", help="Workspace slug or id.")]
KeyArgument = Annotated[str, typer.Argument(help="The broadcast's key.")]


def _read_ids(path: Path) -> list[str]:
    """User ids from a file: one per line, or a CSV whose first column (or user_id column) holds them."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            rows = [row for row in csv.reader(handle) if row and row[0].strip()]
    except OSError as error:
        fail(f"cannot read {path}: {error.strerror}")
    column = 0
    if rows and "user_id" in [c.strip().lower() for c in rows[0]]:
        column = [c.strip().lower() for c in rows[0]].index("user_id")
        rows = rows[1:]
    ids = [row[column].strip() for row in rows if len(row) > column and row[column].strip()]
    if not ids:
        fail(f"{path} holds no user ids")
    return ids


@broadcasts_app.command("list")
@explains_errors
def list_command(workspace: WorkspaceOption) -> None:
    """The workspace's broadcasts, newest first."""
    from lifeloop.broadcasts import service
    from lifeloop.store.engine import connect

    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    with connect(engine) as conn:
        rows = service.list_broadcasts(conn, ws)
    table = Table("key", "name", "status", "send at", "audience", "queued")
    for b in rows:
        when = b.send_at.strftime("%Y-%m-%d %H:%M") if b.send_at else "—"
        audience = "—" if b.audience_size is None else str(b.audience_size)
        table.add_row(b.key, b.name, b.status, when, audience, str(b.queued))
    console.print(table)


@broadcasts_app.command("create")
@explains_errors
def create_command(
    key: KeyArgument,
    path: Annotated[Path, typer.Argument(help="The definition, YAML or JSON; - reads standard input.")],
    workspace: WorkspaceOption,
    name: Annotated[str | None, typer.Option(help="Shown to operators (default: the key).")] = None,
    ids_file: Annotated[
        Path | None, typer.Option(help="A file of user ids (one per line, or CSV): the audience's list.")
    ] = None,
) -> None:
    """Save a draft broadcast; nothing is sent until it is scheduled."""
    from lifeloop.broadcasts import service

    definition = read_yaml(path)
    if ids_file is not None:
        if not isinstance(definition, dict):
            fail("the definition must be a mapping to add a list of ids to")
        audience = definition.setdefault("audience", {})
        if not isinstance(audience, dict):
            fail("audience must be a mapping")
        audience["user_ids"] = _read_ids(ids_file)
    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    with engine.begin() as conn:
        broadcast = service.create_broadcast(conn, ws, key=key, name=name or key, definition=definition)
    console.print(f"broadcast [bold]{broadcast.key}[/] saved as a draft")


@broadcasts_app.command("show")
@explains_errors
def show_command(key: KeyArgument, workspace: WorkspaceOption) -> None:
    """A broadcast with its definition, as JSON."""
    from lifeloop.broadcasts import service
    from lifeloop.store.engine import connect

    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    with connect(engine) as conn:
        print_json(service.get_broadcast(conn, ws, key).as_dict())


@broadcasts_app.command("estimate")
@explains_errors
def estimate_command(key: KeyArgument, workspace: WorkspaceOption) -> None:
    """Who it would reach: members, holdout, reachable per channel, and the contact policy's verdicts."""
    from lifeloop.broadcasts import service
    from lifeloop.store.engine import connect

    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    with connect(engine) as conn:
        broadcast = service.get_broadcast(conn, ws, key)
        result = service.estimate(conn, ws, broadcast.parsed(), broadcast_id=broadcast.id)
    expected = result["expected"]
    table = Table("", "users", title=f"{key}: estimate")
    table.add_row("members", str(result["members"]))
    table.add_row("holdout", str(result["holdout"]))
    for channel, n in sorted(result["reachable"].items()):
        table.add_row(f"reachable on {channel}" if channel != "unreachable" else "reachable on none", str(n))
    table.add_row("expected sent", str(expected["sent"]))
    table.add_row("expected suppressed", str(expected["suppressed"]))
    table.add_row("expected deferred", str(expected["deferred"]))
    console.print(table)
    for kind, reasons in expected["reasons"].items():
        for reason, n in sorted(reasons.items(), key=lambda item: -item[1]):
            console.print(f"  {kind}: {n} — {reason}")
    for channel in result["channels_without_credentials"]:
        console.print(f"[yellow]the {channel} channel has no credentials yet: scheduling will refuse[/]")


@broadcasts_app.command("schedule")
@explains_errors
def schedule_command(
    key: KeyArgument,
    workspace: WorkspaceOption,
    watch: Annotated[
        bool, typer.Option("--watch", help="Show progress until every message settled.")
    ] = False,
) -> None:
    """Send it at its time (a running `lifeloop worker` queues and delivers the messages)."""
    from lifeloop.broadcasts import service

    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    with engine.begin() as conn:
        broadcast = service.schedule_broadcast(conn, ws, key)
    console.print(f"broadcast [bold]{key}[/] scheduled for {broadcast.send_at:%Y-%m-%d %H:%M} UTC")
    if watch:
        _watch(engine, ws, key)


def _watch(engine: Any, workspace_id: int, key: str) -> None:
    from lifeloop.broadcasts.stats import broadcast_stats
    from lifeloop.store.engine import connect

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        queued = progress.add_task("queued", total=None)
        settled = progress.add_task("settled", total=None)
        while True:
            with connect(engine) as conn:
                stats = broadcast_stats(conn, workspace_id, key)
            audience = stats["audience"] or None
            messages = stats["messages"]["total"]
            done = messages - stats["waiting"] - stats["deferred"]
            progress.update(queued, completed=stats["queued"], total=audience)
            progress.update(settled, completed=done, total=max(messages, 1))
            if stats["status"] in ("sent", "cancelled"):
                break
            time.sleep(1)
    console.print(f"{key}: {stats['status']}, {stats['sent']} sent, {stats['suppressed']} suppressed")


@broadcasts_app.command("cancel")
@explains_errors
def cancel_command(key: KeyArgument, workspace: WorkspaceOption) -> None:
    """Stop it: what has not gone out is suppressed with the reason "broadcast cancelled"."""
    from lifeloop.broadcasts import service

    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    with engine.begin() as conn:
        result = service.cancel_broadcast(conn, ws, key)
    console.print(f"broadcast [bold]{key}[/] cancelled; {result['messages_stopped']} messages stopped")


@broadcasts_app.command("stats")
@explains_errors
def stats_command(
    key: KeyArgument,
    workspace: WorkspaceOption,
    as_json: Annotated[bool, typer.Option("--json", help="Everything, as JSON.")] = False,
) -> None:
    """Sent, suppressed and deferred by reason, clicks, replies, conversions, each variant vs holdout."""
    from lifeloop.broadcasts.stats import broadcast_stats
    from lifeloop.store.engine import connect

    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    with connect(engine) as conn:
        stats = broadcast_stats(conn, ws, key)
    if as_json:
        print_json(stats)
        return
    table = Table("", "count", title=f"{key}: {stats['status']}")
    for label in ("audience", "holdout", "queued", "sent", "waiting", "deferred", "suppressed", "failed"):
        table.add_row(label, str(stats[label] if stats[label] is not None else "—"))
    console.print(table)
    for label in ("suppressed_by_reason", "deferred_by_reason", "failed_by_reason"):
        for reason, n in sorted(stats[label].items(), key=lambda item: -item[1]):
            console.print(f"  {label.split('_')[0]}: {n} — {reason}")
    if stats["variants"]:
        variants = Table("variant", "users", "clicked", "replied", "converted", "revenue", "vs holdout")
        arms = (stats["experiment"] or {}).get("arms", {})
        for name, v in stats["variants"].items():
            verdict = arms.get(name, {}).get("vs_holdout", {}).get("verdict", "")
            variants.add_row(name, str(v["users"]), str(v["clicked"]), str(v["replied"]), str(v["converted"]),
                             f"{v['revenue']:.2f}", verdict)  # fmt: skip
        console.print(variants)
