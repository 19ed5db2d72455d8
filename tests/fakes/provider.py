"""A fake provider's plumbing: a Starlette app served by uvicorn on 127.0.0.1 in a thread.

Each fake records what it received and can be scripted to answer the next requests with an error
(``fail_next``), as the real provider would under load or misconfiguration.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any


@dataclass(frozen=True)
class Scripted:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class FakeProvider:
    """Subclasses build ``self.app`` (a Starlette app); use as a context manager."""

    app: Starlette

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.scripted: deque[Scripted] = deque()
        self.lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail_next(self, status: int, body: dict[str, Any] | None = None, **headers: str) -> None:
        """Answer the next API request (after auth) with this status and body."""
        self.scripted.append(
            Scripted(status, body or {}, {k.replace("_", "-"): v for k, v in headers.items()})
        )

    def take_scripted(self) -> Response | None:
        with self.lock:
            if not self.scripted:
                return None
            item = self.scripted.popleft()
        return JSONResponse(item.body, status_code=item.status, headers=item.headers)

    async def record(self, request: Request) -> Any:
        raw = await request.body()
        try:
            payload = await request.json() if raw else None
        except ValueError:
            payload = raw.decode(errors="replace")
        with self.lock:
            self.requests.append(
                Recorded(
                    request.method,
                    request.url.path,
                    dict(request.query_params),
                    dict(request.headers),
                    payload,
                )
            )
        return payload

    def calls(self, path: str) -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if r.path == path]

    def __enter__(self) -> FakeProvider:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{type(self).__name__} did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.should_exit = True
        self._thread.join(timeout=10)
