"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from sqlalchemy import text

from lifeloop import __version__
from lifeloop.store.migrate import current_revision, head_revision
from lifeloop.web.deps import EngineDep
from lifeloop.web.responses import JSONBody

router = APIRouter(tags=["health"])


@router.get("/health")
def health() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok", "version": __version__}


@router.get("/health/ready")
def ready(request: Request, engine: EngineDep) -> JSONBody:
    """The database answers, is migrated to the newest schema, and no start-up load is under way."""
    loading: str | None = request.app.state.loading
    if loading is not None:  # e.g. ``lifeloop demo`` still sending the brand's history
        return JSONBody({"status": "unavailable", "reason": loading}, status_code=503)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        revision = current_revision(engine)
    except Exception as error:  # any failure to reach the store means "not ready"
        return JSONBody({"status": "unavailable", "reason": str(error)[:200]}, status_code=503)
    if revision != head_revision():
        return JSONBody(
            {
                "status": "unavailable",
                "reason": f"schema at {revision}, expected {head_revision()}: run lifeloop migrate",
            },
            status_code=503,
        )
    return JSONBody({"status": "ok", "database": engine.dialect.name, "schema": revision})
