"""REST: /api/v1/lifecycle — models (presets and custom YAML), stage counts, a profile's stage history."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from lifeloop.errors import InvalidInput
from lifeloop.lifecycle import service
from lifeloop.lifecycle.definition import LifecycleModel, preset, preset_keys
from lifeloop.profiles.service import resolve_profile_id
from lifeloop.web.deps import Conn, CurrentGrant, EngineDep, require_role

router = APIRouter(prefix="/api/v1/lifecycle", tags=["lifecycle"])


class ModelCreate(BaseModel):
    preset: str | None = Field(None, description="Install a shipped preset: line, wecom, aarrr or mall.")
    yaml: str | None = Field(None, description="Or a model as YAML (see docs/lifecycle.md).")


def _describe(model: LifecycleModel) -> dict[str, Any]:
    return {
        "key": model.key,
        "version": model.version,
        "name": model.names,
        "description": model.description,
        "stages": [
            {"key": s.key, "name": s.names, "when": s.source, "emit_on_enter": s.emit_on_enter}
            for s in model.stages
        ],
    }


@router.get("/presets")
def list_presets(grant: CurrentGrant) -> list[dict[str, Any]]:
    return [_describe(preset(key)) for key in preset_keys()]


@router.get("/models")
def list_models(conn: Conn, grant: CurrentGrant) -> list[dict[str, Any]]:
    return service.list_models(conn, grant.workspace_id)


@router.get("/models/active")
def get_active_model(conn: Conn, grant: CurrentGrant) -> dict[str, Any]:
    return _describe(service.require_active_model(conn, grant.workspace_id))


@router.post("/models", status_code=201)
def install_model(body: ModelCreate, engine: EngineDep, grant: CurrentGrant) -> dict[str, Any]:
    """Install and activate a model version. Stages follow as events arrive; run a recompute (CLI
    ``lifeloop recompute``) to place everyone at once."""
    require_role(grant, "admin", "operator")
    if (body.preset is None) == (body.yaml is None):
        raise InvalidInput("send either preset or yaml", field="preset")
    with engine.begin() as conn:
        if body.preset is not None:
            return service.install_preset(conn, grant.workspace_id, body.preset)
        return service.install_model(conn, grant.workspace_id, body.yaml or "")


@router.get("/stages")
def stage_counts(conn: Conn, grant: CurrentGrant) -> dict[str, Any]:
    model = service.require_active_model(conn, grant.workspace_id)
    counts = service.stage_distribution(conn, grant.workspace_id)
    return {
        "model": model.key,
        "stages": [{"key": s.key, "name": s.names, "profiles": counts[s.key]} for s in model.stages],
    }


@router.get("/profiles/{profile_id}/history")
def stage_history(conn: Conn, grant: CurrentGrant, profile_id: int) -> list[dict[str, Any]]:
    resolve_profile_id(conn, grant.workspace_id, profile_id)  # 404 for a profile of another workspace
    return service.history(conn, grant.workspace_id, profile_id)
