"""REST: /api/v1/analytics — metrics as chart-ready JSON."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from lifeloop.analytics import rfm, service
from lifeloop.analytics.metrics import METRICS
from lifeloop.analytics.store import store
from lifeloop.web.deps import CurrentGrant, analytics_path

router = APIRouter(prefix="/api/v1/analytics", tags=["analytics"])


_store_path = analytics_path


def _params(request: Request) -> dict[str, Any]:
    """Query parameters; a repeated one (``steps=A&steps=B``) becomes a list."""
    params: dict[str, Any] = {}
    for key, value in request.query_params.multi_items():
        if key in params:
            params[key] = [*params[key], value] if isinstance(params[key], list) else [params[key], value]
        else:
            params[key] = value
    return params


@router.get("")
def list_metrics(grant: CurrentGrant) -> dict[str, Any]:
    """Every metric with its parameters (JSON Schema)."""
    return {
        "metrics": [
            {
                "name": name,
                "title": cls.title,
                "description": " ".join((cls.__doc__ or "").split()),
                "params": {
                    k: v for k, v in cls.model_json_schema()["properties"].items() if k != "workspace_id"
                },
            }
            for name, cls in METRICS.items()
        ]
    }


@router.get("/rfm")
def rfm_layers(request: Request, grant: CurrentGrant) -> dict[str, Any]:
    """Users per value layer from the last RFM scoring (``lifeloop analytics rfm``)."""
    with store(_store_path(request)) as con:
        frame = rfm.layer_counts(con, grant.workspace_id)
    return {
        "metric": "rfm_layers",
        "columns": list(frame.columns),
        "data": [[layer, int(users)] for layer, users in frame.itertuples(index=False, name=None)],
        "chart": {"type": "pie", "name": "layer", "value": "users"},
    }


@router.get("/{metric}")
def metric(metric: str, request: Request, grant: CurrentGrant) -> dict[str, Any]:
    """Run one metric, e.g. ``/api/v1/analytics/retention?start=2024-01-01&end=2024-01-31&days=1,7,30``."""
    result = service.run_metric(_store_path(request), grant.workspace_id, metric, _params(request))
    return result.to_json()
