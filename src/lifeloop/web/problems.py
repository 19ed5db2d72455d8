"""One mapping from domain errors to HTTP problem responses: status, code, message, field, errors."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from lifeloop.errors import LifeloopError
from lifeloop.web.responses import JSONBody


def problem(
    status: int, code: str, message: str, field: str | None = None, errors: list | None = None
) -> JSONBody:
    body: dict = {"success": False, "status": status, "code": code, "message": message}
    if field is not None:
        body["field"] = field
    if errors:
        body["errors"] = errors
    headers = {"WWW-Authenticate": 'Basic realm="lifeloop"'} if status == 401 else None
    return JSONBody(body, status_code=status, headers=headers)


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(LifeloopError)
    async def _domain(_request: Request, error: LifeloopError) -> JSONBody:
        return problem(error.status, error.code, error.message, error.field, error.errors)

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
