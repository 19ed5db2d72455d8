"""Settings, read from ``LIFELOOP_*`` environment variables (and an optional ``.env`` file)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LIFELOOP_", env_file=".env", extra="ignore")

    database_url: str = Field(
        default="sqlite:///./var/lifeloop.db",
        description="SQLAlchemy URL of the operational store: sqlite:///path or postgresql://user@host/db.",
    )
    sqlite_synchronous: str = Field(
        default="NORMAL",
        description=(
            "SQLite PRAGMA synchronous. NORMAL in WAL mode survives process crashes; FULL also power loss."
        ),
    )
    host: str = "127.0.0.1"
    port: int = 8000
    write_key_cache_seconds: float = Field(
        default=30.0, description="How long a verified write key is trusted before it is looked up again."
    )
    strict_scoping: bool = Field(
        default=False,
        description="Refuse any statement on a workspace-scoped table that does not filter by workspace.",
    )
    public_url: str | None = Field(
        default=None,
        description="Where customers' browsers reach this deployment, for links it hands out (/r/{code}).",
    )
    log_level: str = "info"
    resolve_in_server: bool = Field(
        default=True,
        description=(
            "Resolve identities of ingested events in a thread of the API process. Turn off when "
            "`lifeloop worker` processes do it."
        ),
    )
    analytics_engine: str = Field(default="duckdb", pattern="^(duckdb|spark)$", description="duckdb|spark")
    spark_master: str = Field(default="local[2]", description="Spark master URL when the engine is spark.")

    @field_validator("database_url")
    @classmethod
    def _normalise_driver(cls, url: str) -> str:
        # Plain postgresql:// URLs would pick psycopg2; we ship psycopg 3.
        for prefix in ("postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix) :]
        return url

    @field_validator("sqlite_synchronous")
    @classmethod
    def _known_synchronous(cls, value: str) -> str:
        value = value.upper()
        if value not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise ValueError("must be one of OFF, NORMAL, FULL, EXTRA")
        return value

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def sqlite_path(self) -> Path | None:
        """The database file of an SQLite URL, or None for PostgreSQL and in-memory databases."""
        if not self.is_sqlite:
            return None
        path = self.database_url.split(":///", 1)[1] if ":///" in self.database_url else ""
        return Path(path) if path and path != ":memory:" else None


@lru_cache
def get_settings() -> Settings:
    return Settings()
