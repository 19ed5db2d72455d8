"""Shared metadata and column types. Each domain package declares its own tables on ``metadata``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Integer, MetaData, TypeDecorator
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only auto-increments an INTEGER PRIMARY KEY (the rowid alias).
Id = BigInteger().with_variant(Integer(), "sqlite")

Json = JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out, whatever the database keeps (SQLite has no time zones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} given; store times as aware UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # raw SQL paths on SQLite
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def sqlite_time(value: datetime) -> str:
    """The text ``UTCDateTime`` keeps on SQLite (naive UTC, always six digits of µs): for statements that
    bypass SQLAlchemy's bind processing, and for comparing with stored times as text."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")


def utcnow() -> datetime:
    return datetime.now(UTC)


# Every module that declares tables; migrations and the schema test see exactly these.
DOMAIN_MODELS = (
    "lifeloop.workspaces.models",
    "lifeloop.events.models",
    "lifeloop.profiles.models",
    "lifeloop.profiles.computed",
    "lifeloop.audience.models",
    "lifeloop.lifecycle.models",
    "lifeloop.messaging.channels.models",
    "lifeloop.messaging.templates.models",
    "lifeloop.messaging.models",
    "lifeloop.journeys.models",
    "lifeloop.broadcasts.models",
    "lifeloop.accounts.models",
    "lifeloop.engagement.coupons.models",
    "lifeloop.engagement.points.models",
    "lifeloop.engagement.tiers.models",
    "lifeloop.engagement.referrals.models",
    "lifeloop.engagement.advisors.models",
    "lifeloop.store.state_log",
    "lifeloop.store.identity",
)


def load_all_tables() -> MetaData:
    """Import every domain's models so ``metadata`` knows all tables (for migrations and tests)."""
    import importlib

    for module in DOMAIN_MODELS:
        importlib.import_module(module)

    return metadata
