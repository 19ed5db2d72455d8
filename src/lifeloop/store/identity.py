"""Which database this is: a random id written once, when the schema is created.

The analytics store is a copy of one operational database. It records this id, so that a copy made from
another database (a deleted and recreated SQLite file, another environment's file) is recognised and
copied again rather than read as this database's events (``analytics.sync``). A backup restored into a
new file keeps its id, as it should: it is the same database.
"""

from __future__ import annotations

from sqlalchemy import Column, Connection, String, Table, select

from lifeloop.store.schema import UTCDateTime, metadata

store_identity = Table(
    "store_identity",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("created_at", UTCDateTime, nullable=False),
)


def database_id(conn: Connection) -> str:
    """This database's id."""
    return str(conn.execute(select(store_identity.c.id)).scalar_one())
