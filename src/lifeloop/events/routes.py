"""The Segment-compatible tracking endpoints: /v1/track, identify, page, screen, group, alias, batch."""

from __future__ import annotations

import base64
import zlib
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from lifeloop.errors import InvalidInput, PayloadTooLarge, Unauthorized
from lifeloop.events.messages import (
    MAX_BATCH_BYTES,
    MAX_EVENT_BYTES,
    MESSAGE_TYPES,
    check_event_size,
    parse_batch,
    parse_message,
)
from lifeloop.events.openapi import batch_schema, message_schema
from lifeloop.events.service import ingest
from lifeloop.store.engine import connect, sqlite_writer_busy
from lifeloop.store.schema import utcnow
from lifeloop.web.responses import JSONBody
from lifeloop.workspaces.service import cached_write_key, verify_write_key

router = APIRouter(prefix="/v1", tags=["ingest"])

_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Committed: every accepted message is durably stored."},
    400: {"description": "Malformed JSON or an invalid message; `field` names it, `errors` lists each item."},
    401: {"description": "Missing or invalid write key."},
    413: {"description": "An event over 32 KB or a request over 500 KB."},
}


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, decompressed, refusing anything over ``limit`` bytes without reading it all."""
    declared = request.headers.get("content-length")
    encoding = request.headers.get("content-encoding", "identity").lower().strip()
    if encoding not in ("identity", "gzip", ""):
        raise InvalidInput(f"Content-Encoding {encoding!r} is not supported; send gzip or no encoding")
    too_large = PayloadTooLarge(f"request body is over {limit // 1024} KB, the limit for this endpoint")
    if declared and declared.isdigit() and int(declared) > limit and encoding != "gzip":
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit * 4 or (size > limit and encoding != "gzip"):
            raise too_large
        chunks.append(chunk)
    body = b"".join(chunks)
    if encoding == "gzip":
        inflater = zlib.decompressobj(wbits=31)
        try:
            body = inflater.decompress(body, limit + 1)
        except zlib.error as error:
            raise InvalidInput(f"body is not valid gzip: {error}") from None
        if len(body) > limit or inflater.unconsumed_tail:
            raise too_large
    return body


def _basic_auth_user(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        raise Unauthorized("Authorization header is not valid HTTP Basic credentials") from None
    return decoded.partition(":")[0] or None


def _parse_json(body: bytes) -> Any:
    if not body:
        raise InvalidInput("request body is empty; send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InvalidInput(f"body is not valid JSON: {error}") from None


async def _accept(request: Request, payload: Any, parse: Any) -> JSONBody:
    write_key = _basic_auth_user(request) or (payload.get("writeKey") if isinstance(payload, dict) else None)
    state = request.app.state
    if state.resolver is not None and state.resolver.behind:
        await state.resolver.admit()  # backpressure: identity resolution is too far behind

    def work() -> dict[str, Any]:
        given = write_key if isinstance(write_key, str) else None
        key = cached_write_key(given, state.write_keys)
        if key is None:
            with connect(state.engine) as conn:
                key = verify_write_key(conn, given, state.write_keys)
        messages = parse(utcnow())
        result = ingest(state.engine, key, messages, with_ids=False)
        if state.resolver is not None and result.accepted:
            state.resolver.notify()
        return {"success": True, "accepted": result.accepted, "duplicates": result.duplicates}

    if state.engine.dialect.name == "sqlite" and not sqlite_writer_busy(state.engine):
        # One writer at a time anyway: doing the short insert on the event loop saves the hand-off to a
        # pool thread and the GIL contention with it (about 30 % more events/s, measured). While the
        # resolver holds the write turn the request waits in a pool thread, never on the event loop.
        return JSONBody(work())
    return JSONBody(await run_in_threadpool(work))


def _single_endpoint(message_type: str) -> Any:
    async def endpoint(request: Request) -> JSONBody:
        payload = _parse_json(await _read_body(request, MAX_EVENT_BYTES))
        if isinstance(payload, dict):
            check_event_size(payload, "body")

        def parse(received_at: Any) -> list[Any]:
            return [parse_message(payload, received_at=received_at, forced_type=message_type)]

        return await _accept(request, payload, parse)

    endpoint.__name__ = f"ingest_{message_type}"
    endpoint.__doc__ = f"Record a Segment `{message_type}` call."
    return endpoint


for _type in MESSAGE_TYPES:
    router.add_api_route(
        f"/{_type}",
        _single_endpoint(_type),
        methods=["POST"],
        responses=_RESPONSES,
        openapi_extra=message_schema(_type),
        summary=f"{_type.capitalize()} call",
    )


async def _batch(request: Request) -> JSONBody:
    payload = _parse_json(await _read_body(request, MAX_BATCH_BYTES))

    def parse(received_at: Any) -> list[Any]:
        return parse_batch(payload, received_at=received_at)

    return await _accept(request, payload, parse)


for _path, _summary in (("/batch", "Batch of calls"), ("/import", "Historical import (same as batch)")):
    router.add_api_route(
        _path, _batch, methods=["POST"], responses=_RESPONSES, openapi_extra=batch_schema(), summary=_summary
    )
