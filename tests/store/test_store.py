"""Migrations build exactly the declared schema on both databases; the scoping guard catches leaks."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from lifeloop.events.models import events
from lifeloop.store.migrate import current_revision, downgrade, head_revision, upgrade
from lifeloop.store.schema import load_all_tables
from lifeloop.store.scoping import CrossWorkspaceQuery, check_statement
from lifeloop.workspaces.models import sources


def test_migrated_schema_matches_the_tables_in_code(engine: sa.Engine) -> None:
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), load_all_tables()
        )
    assert diff == []


def test_downgrade_and_upgrade_round_trip(engine: sa.Engine) -> None:
    downgrade(engine, "base")
    assert sa.inspect(engine).get_table_names() == ["alembic_version"]
    upgrade(engine)
    assert set(sa.inspect(engine).get_table_names()) >= {"events", "profiles", "identities", "workspaces"}


def test_unscoped_statements_are_refused(engine: sa.Engine) -> None:
    with pytest.raises(CrossWorkspaceQuery), engine.connect() as conn:
        conn.execute(sa.select(events.c.id))
    with pytest.raises(CrossWorkspaceQuery), engine.connect() as conn:
        conn.execute(sa.update(events).values(event="x"))
    with pytest.raises(CrossWorkspaceQuery), engine.connect() as conn:
        conn.execute(sa.select(sources.c.id).where(sources.c.id.in_(sa.select(events.c.source_id))))
    with engine.connect() as conn:  # scoped, and explicitly cross-workspace, both pass
        conn.execute(sa.select(events.c.id).where(events.c.workspace_id == 1))
        conn.execute(sa.select(events.c.id).execution_options(cross_workspace=True))


def test_join_is_covered_through_its_condition() -> None:
    joined = sa.select(events.c.id).select_from(
        events.join(
            sources, (sources.c.workspace_id == events.c.workspace_id) & (sources.c.id == events.c.source_id)
        )
    )
    check_statement(joined.where(events.c.workspace_id == 3))
    with pytest.raises(CrossWorkspaceQuery):
        check_statement(
            sa.select(events.c.id)
            .select_from(events.join(sources, sources.c.id == events.c.source_id))
            .where(events.c.workspace_id == 3)
        )
