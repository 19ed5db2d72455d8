"""Request-body schemas of the tracking endpoints for /openapi.json (validation itself is in messages.py)."""

from __future__ import annotations

from typing import Any

_COMMON: dict[str, Any] = {
    "userId": {"type": "string", "maxLength": 255},
    "anonymousId": {"type": "string", "maxLength": 255},
    "messageId": {"type": "string", "maxLength": 255, "description": "Idempotency key: a repeat is ignored."},
    "timestamp": {"type": "string", "format": "date-time"},
    "sentAt": {"type": "string", "format": "date-time", "description": "Used to correct the device clock."},
    "context": {"type": "object", "description": "Kept as sent; context.externalIds links channel ids."},
    "integrations": {"type": "object"},
    "writeKey": {"type": "string", "description": "Alternative to HTTP Basic auth."},
}
_SPECIFIC: dict[str, dict[str, Any]] = {
    "track": {"event": {"type": "string"}, "properties": {"type": "object"}},
    "identify": {"traits": {"type": "object"}},
    "page": {"name": {"type": "string"}, "category": {"type": "string"}, "properties": {"type": "object"}},
    "screen": {"name": {"type": "string"}, "properties": {"type": "object"}},
    "group": {"groupId": {"type": "string"}, "traits": {"type": "object"}},
    "alias": {"previousId": {"type": "string"}},
}
_REQUIRED = {"track": ["event"], "group": ["groupId"], "alias": ["userId", "previousId"]}


def _schema(message_type: str) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {**_COMMON, **_SPECIFIC[message_type]},
        "additionalProperties": True,
    }
    if message_type in _REQUIRED:
        schema["required"] = _REQUIRED[message_type]
    return schema


def message_schema(message_type: str) -> dict[str, Any]:
    return {
        "requestBody": {"required": True, "content": {"application/json": {"schema": _schema(message_type)}}}
    }


def batch_schema() -> dict[str, Any]:
    item = {
        "oneOf": [
            {**_schema(t), "properties": {**_schema(t)["properties"], "type": {"const": t}}}
            for t in _SPECIFIC
        ]
    }
    body = {
        "type": "object",
        "required": ["batch"],
        "properties": {
            "batch": {"type": "array", "items": item, "minItems": 1},
            "context": {"type": "object"},
            "integrations": {"type": "object"},
            "sentAt": {"type": "string", "format": "date-time"},
            "writeKey": {"type": "string"},
        },
    }
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": body}}}}
