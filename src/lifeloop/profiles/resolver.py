"""Places ingested events on profiles (identity resolution), after ingest has committed them."""

from __future__ import annotations

from sqlalchemy import Engine


def resolve_pending(engine: Engine, workspace_id: int | None = None, *, batch_size: int = 1000) -> int:
    """Resolve every event still waiting for a profile; returns how many were placed."""
    return 0
