"""``lifeloop tags …`` and ``lifeloop segments …``."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from lifeloop.cli_support import console, err, explains_errors, fail, open_engine
from lifeloop.workspaces.service import workspace_id_of

if TYPE_CHECKING:
    from sqlalchemy import Engine

tags_app = typer.Typer(help="Tags: rule tags, event tags, manual tags.", no_args_is_help=True)
segments_app = typer.Typer(help="Segments: saved conditions with live membership.", no_args_is_help=True)
WorkspaceOption = Annotated[str, typer.Option("--workspace", "-w", help="Workspace slug or id.")]
ProfileOption = Annotated[int | None, typer.Option("--profile", help="Profile id.")]
UserOption = Annotated[str | None, typer.Option("--user", help="Or the profile's userId.")]


def _profile_id(engine: Engine, workspace_id: int, profile: int | None, user: str | None) -> int:
    from lifeloop.profiles.service import find_by_identity
    from lifeloop.store.engine import connect

    if (profile is None) == (user is None):
        fail("give either --profile or --user")
    if profile is not None:
        return profile
    with connect(engine) as conn:
        return find_by_identity(conn, workspace_id, "user_id", user or "")


# --- tags ---------------------------------------------------------------------------------------
@tags_app.command("add")
@explains_errors
def tags_add(
    tag: Annotated[str, typer.Argument(help="The tag.")],
    workspace: WorkspaceOption,
    profile: ProfileOption = None,
    user: UserOption = None,
    expires: Annotated[
        datetime | None, typer.Option(help="When the tag runs out (UTC unless an offset is given).")
    ] = None,
) -> None:
    """Tag one profile by hand."""
    from datetime import UTC

    from lifeloop.audience import service

    engine = open_engine()
    workspace_id = workspace_id_of(engine, workspace)
    profile_id = _profile_id(engine, workspace_id, profile, user)
    expires_at = None if expires is None else (expires if expires.tzinfo else expires.replace(tzinfo=UTC))
    with engine.begin() as conn:
        changes = service.add_manual_tag(conn, workspace_id, profile_id, tag, expires_at=expires_at)
    console.print(f"tagged profile {profile_id} {tag!r} ({len(changes)} changes)")


@tags_app.command("remove")
@explains_errors
def tags_remove(
    tag: Annotated[str, typer.Argument(help="The tag.")],
    workspace: WorkspaceOption,
    profile: ProfileOption = None,
    user: UserOption = None,
) -> None:
    """Remove a manual or event tag from one profile (rule tags follow their rule)."""
    from lifeloop.audience import service

    engine = open_engine()
    workspace_id = workspace_id_of(engine, workspace)
    profile_id = _profile_id(engine, workspace_id, profile, user)
    with engine.begin() as conn:
        service.remove_manual_tag(conn, workspace_id, profile_id, tag)
    console.print(f"removed {tag!r} from profile {profile_id}")


@tags_app.command("list")
@explains_errors
def tags_list(workspace: WorkspaceOption, profile: ProfileOption = None, user: UserOption = None) -> None:
    """Tags held now, with profile counts; or one profile's tags."""
    from lifeloop.audience import query
    from lifeloop.store.engine import connect
    from lifeloop.store.schema import utcnow

    engine = open_engine()
    workspace_id = workspace_id_of(engine, workspace)
    if profile is None and user is None:
        with connect(engine) as conn:
            counts = query.tag_counts(conn, workspace_id, utcnow())
        table = Table("tag", "kind", "profiles")
        for row in counts:
            table.add_row(row["tag"], row["kind"], f"{row['profiles']:,}")
    else:
        profile_id = _profile_id(engine, workspace_id, profile, user)
        with connect(engine) as conn:
            held = query.profile_tag_list(conn, workspace_id, profile_id, utcnow())
        table = Table("tag", "kind", "added", "expires", title=f"profile {profile_id}")
        for row in held:
            expires = row["expires_at"].isoformat() if row["expires_at"] else "-"
            table.add_row(row["tag"], row["kind"], row["added_at"].isoformat(), expires)
    console.print(table)


@tags_app.command("rules")
@explains_errors
def tags_rules(
    workspace: WorkspaceOption,
    preset: Annotated[
        str | None, typer.Option(help="First install a preset: line (event tags) or wecom (vip).")
    ] = None,
    tag: Annotated[str | None, typer.Option(help="First create or replace the rule of this tag…")] = None,
    when: Annotated[str | None, typer.Option(help="…with this condition.")] = None,
    emit: Annotated[str | None, typer.Option(help="…recording this event when the tag is added.")] = None,
    delete: Annotated[str | None, typer.Option(help="First delete the rule of this tag.")] = None,
) -> None:
    """List tag rules and event-tag rules (optionally installing, setting or deleting one first)."""
    from lifeloop.audience import batch, definitions
    from lifeloop.store.engine import connect

    engine = open_engine()
    workspace_id = workspace_id_of(engine, workspace)
    if (tag is None) != (when is None):
        fail("--tag and --when go together")
    with engine.begin() as conn:
        if preset is not None:
            definitions.install_preset(conn, workspace_id, preset)
        changed = None
        if tag is not None:
            _row, changed = definitions.put_tag_rule(conn, workspace_id, tag, when or "", emit_on_add=emit)
        if delete is not None:
            definitions.delete_tag_rule(conn, workspace_id, delete)
    if changed is not None:
        done = batch.after_definition_change(engine, workspace_id, changed)
        err.print(f"{len(done):,} tag changes")
    elif preset is not None or delete is not None:
        done = batch.recompute_audience(engine, workspace_id, event_tags=False)
        err.print(f"{len(done):,} tag changes")
    with connect(engine) as conn:
        rules = definitions.list_tag_rules(conn, workspace_id)
        event_rules = definitions.list_event_tag_rules(conn, workspace_id)
    table = Table("tag", "condition", "on add", title="rule tags")
    for rule in rules:
        table.add_row(rule["tag"], rule["condition"], rule["emit_on_add"] or "")
    console.print(table)
    table = Table("id", "event", "property", "tag", "ttl", title="event tags")
    for rule in event_rules:
        table.add_row(
            str(rule["id"]), rule["event"], rule["property"], f"{rule['prefix']}:<value>", rule["ttl"] or "-"
        )
    console.print(table)


# --- segments -----------------------------------------------------------------------------------
@segments_app.command("create")
@explains_errors
def segments_create(
    key: Annotated[str, typer.Argument(help="What in_segment(key) names.")],
    condition: Annotated[str, typer.Argument(help="The condition (docs/conditions.md).")],
    workspace: WorkspaceOption,
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    description: Annotated[str | None, typer.Option(help="What the segment is for.")] = None,
) -> None:
    """Save a segment; its members are computed at once."""
    from lifeloop.audience import batch, definitions, query
    from lifeloop.store.engine import connect

    engine = open_engine()
    workspace_id = workspace_id_of(engine, workspace)
    with engine.begin() as conn:
        _row, definition = definitions.create_segment(conn, workspace_id, key, name, condition, description)
    batch.after_definition_change(engine, workspace_id, definition)
    with connect(engine) as conn:
        members = query.member_count(conn, workspace_id, key)
    console.print(f"segment {key} created with {members:,} members")


@segments_app.command("list")
@explains_errors
def segments_list(workspace: WorkspaceOption) -> None:
    """Every segment with its member count."""
    from lifeloop.audience import definitions, query
    from lifeloop.store.engine import connect

    engine = open_engine()
    workspace_id = workspace_id_of(engine, workspace)
    table = Table("key", "name", "members", "condition")
    with connect(engine) as conn:
        for row in definitions.list_segments(conn, workspace_id):
            count = query.member_count(conn, workspace_id, row["key"])
            table.add_row(row["key"], row["name"], f"{count:,}", row["condition"])
    console.print(table)


@segments_app.command("count")
@explains_errors
def segments_count(
    key: Annotated[str, typer.Argument(help="Segment key.")], workspace: WorkspaceOption
) -> None:
    """How many profiles are in the segment now."""
    from lifeloop.audience import query
    from lifeloop.store.engine import connect

    engine = open_engine()
    workspace_id = workspace_id_of(engine, workspace)
    with connect(engine) as conn:
        console.print(str(query.member_count(conn, workspace_id, key)))


@segments_app.command("preview")
@explains_errors
def segments_preview(
    target: Annotated[str, typer.Argument(help="A segment key, or a condition with --condition.")],
    workspace: WorkspaceOption,
    condition: Annotated[bool, typer.Option("--condition", help="TARGET is a condition, not a key.")] = False,
    limit: Annotated[int, typer.Option(help="How many profiles to show.")] = 20,
) -> None:
    """Count and first profiles matching a segment's (or any) condition; writes nothing."""
    import orjson

    from lifeloop.audience import definitions, query
    from lifeloop.store.engine import connect
    from lifeloop.store.schema import utcnow

    engine = open_engine()
    workspace_id = workspace_id_of(engine, workspace)
    with connect(engine) as conn:
        source = target if condition else definitions.get_segment(conn, workspace_id, target)["condition"]
        found = query.preview(conn, workspace_id, source, now=utcnow(), limit=limit)
    table = Table("profile", "user id", "e-mail", "traits", title=f"{found['count']:,} profiles match")
    for person in found["profiles"]:
        traits = orjson.dumps(person["traits"], option=orjson.OPT_SORT_KEYS).decode()
        table.add_row(str(person["profile_id"]), person["user_id"] or "", person["email"] or "", traits)
    console.print(table)


@segments_app.command("export")
@explains_errors
def segments_export(
    key: Annotated[str, typer.Argument(help="Segment key.")],
    workspace: WorkspaceOption,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="CSV file (default: stdout).")] = None,
) -> None:
    """Members as CSV: profile_id, user_id, email, traits (JSON)."""
    from lifeloop.audience import query
    from lifeloop.store.engine import connect

    engine = open_engine()
    workspace_id = workspace_id_of(engine, workspace)
    with connect(engine) as conn:
        segment_id = query.segment_id_of(conn, workspace_id, key)
    chunks = query.export_csv(engine, workspace_id, segment_id)
    if output is None:
        for chunk in chunks:
            sys.stdout.write(chunk)
        return
    rows = 0
    with output.open("w", encoding="utf-8", newline="") as sink:
        for chunk in chunks:
            sink.write(chunk)
            rows += chunk.count("\n")
    err.print(f"{rows - 1:,} members written to {output}")
