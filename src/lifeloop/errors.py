"""Domain errors. One exception handler in ``web.problems`` maps them to HTTP problems.

LifeloopError                  500  something we did not expect
├── InvalidInput               400  a field is missing or malformed (``field`` names it)
│   └── BatchInvalid           400  some items of a batch failed; ``errors`` lists each
├── PayloadTooLarge            413  an event over 32 KB or a batch over 500 KB
├── Unauthorized               401  missing or unknown write key / API token
├── Forbidden                  403  the token's role may not do this
├── NotFound                   404
└── Conflict                   409  the request contradicts stored state
"""

from __future__ import annotations

from typing import Any


class LifeloopError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, field: str | None = None, errors: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.errors = errors or []


class InvalidInput(LifeloopError):
    status = 400
    code = "invalid_input"


class BatchInvalid(InvalidInput):
    code = "invalid_batch"


class PayloadTooLarge(LifeloopError):
    status = 413
    code = "payload_too_large"


class Unauthorized(LifeloopError):
    status = 401
    code = "unauthorized"


class Forbidden(LifeloopError):
    status = 403
    code = "forbidden"


class NotFound(LifeloopError):
    status = 404
    code = "not_found"


class Conflict(LifeloopError):
    status = 409
    code = "conflict"
