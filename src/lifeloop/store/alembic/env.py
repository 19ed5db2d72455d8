"""Alembic environment: runs on the connection ``lifeloop.store.migrate`` hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from lifeloop.store.schema import load_all_tables

target_metadata = load_all_tables()


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `lifeloop migrate` (lifeloop.store.migrate.upgrade)")
_run(connection)
