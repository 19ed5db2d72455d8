"""The operational store: SQLAlchemy Core tables on SQLite or PostgreSQL, migrated by Alembic."""

from lifeloop.store.engine import create_store_engine, transaction
from lifeloop.store.schema import metadata

__all__ = ["create_store_engine", "metadata", "transaction"]
