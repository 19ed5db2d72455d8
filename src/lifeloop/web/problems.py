"""One mapping from domain errors to HTTP problem responses: status, code, message, field, errors."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from lifeloop.errors import LifeloopError
from lifeloop.store.engine import RetryTransaction
from lifeloop.web.responses import JSONBody

logger = logging.getLogger("lifeloop.web")


def problem(
    status: int, code: str, message: str, field: str | None = None, errors: list | None = None
) -> JSONBody:
    body: dict = {"success": False, "status": status, "code": code, "message": message}
    if field is not None:
        body["field"] = field
    if errors:
        body["errors"] = errors
    return JSONBody(body, status_code=status)


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(LifeloopError)
    async def _domain(request: Request, error: LifeloopError) -> JSONBody:
        response = problem(error.status, error.code, error.message, error.field, error.errors)
        if error.status == 401:  # ingest takes a write key (Basic), the REST API a token (Bearer)
            scheme = "Basic" if request.url.path.startswith("/v1/") else "Bearer"
            response.headers["WWW-Authenticate"] = f'{scheme} realm="lifeloop"'
        return response

    @app.exception_handler(RetryTransaction)
    async def _contended(_request: Request, _error: RetryTransaction) -> JSONBody:
        response = problem(503, "contended", "too many concurrent writers changed the same profiles; retry")
        response.headers["Retry-After"] = "1"
        return response

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, error: Exception) -> JSONBody:
        logger.exception("unhandled error", exc_info=error)
        return problem(500, "internal_error", "an unexpected error occurred; nothing was stored")

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, error: RequestValidationError) -> JSONBody:
        details = [
            {"field": ".".join(str(p) for p in e["loc"][1:]) or None, "message": e["msg"]}
            for e in error.errors()
        ]
        first = details[0] if details else {"field": None, "message": "invalid request"}
        return problem(400, "invalid_input", f"{first['field']}: {first['message']}", first["field"], details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, error: StarletteHTTPException) -> JSONBody:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        return problem(error.status_code, code, str(error.detail))
