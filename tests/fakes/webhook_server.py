"""A real HTTP server on 127.0.0.1 that imitates a webhook receiver / messaging provider.

Like Stripe or LINE it de-duplicates by ``Idempotency-Key``: the first request with a key is accepted,
later ones are answered with the same message id and counted as replays. Tests script it to fail,
answer 429 with Retry-After, be slow, or refuse bad signatures.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from lifeloop.messaging.channels.webhook import SIGNATURE_HEADER, verify_signature


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default 5 drops connections of a busy sender: 1 s SYN retries
    daemon_threads = True


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Received:
    key: str | None
    path: str
    body: dict[str, Any] | None
    signature: str | None
    status: int  # what we answered
    replay: bool  # the key had been accepted before
    at: float


class FakeWebhookServer:
    """Start with ``with FakeWebhookServer(secret) as server:``; post to ``server.url``."""

    def __init__(self, secret: str | None = "whsec_test", *, delay: float = 0.0) -> None:
        self.secret = secret
        self.delay = delay  # seconds each request takes, before it is accepted
        self.received: list[Received] = []
        self.accepted: dict[str, dict[str, Any]] = {}  # key → body of the first accepted request
        self._scripted: deque[Reply] = deque()
        self._per_key: dict[str, deque[Reply]] = {}
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/hook"

    def __enter__(self) -> FakeWebhookServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    # scripting
    def then(self, *replies: Reply, key: str | None = None) -> None:
        """Answer the next requests (of ``key``, or of any key) with ``replies``, in order."""
        with self._lock:
            queue = self._scripted if key is None else self._per_key.setdefault(key, deque())
            queue.extend(replies)

    # what happened
    def accepted_count(self) -> int:
        with self._lock:
            return len(self.accepted)

    def acceptances_per_key(self) -> Counter[str]:
        """How many requests per key were accepted as new (1 each when de-duplication holds)."""
        with self._lock:
            return Counter(r.key for r in self.received if r.key and 200 <= r.status < 300 and not r.replay)

    def requests_per_key(self) -> Counter[str]:
        with self._lock:
            return Counter(r.key for r in self.received if r.key)

    def _answer(
        self, key: str | None, body: dict[str, Any] | None, raw: bytes, signature: str | None
    ) -> Reply:
        if self.secret is not None and not verify_signature(self.secret, signature, raw):
            return Reply(401, {"error": "bad signature"})
        if key is None:
            return Reply(400, {"error": "Idempotency-Key header is required"})
        with self._lock:
            per_key = self._per_key.get(key)
            scripted = (
                per_key.popleft() if per_key else (self._scripted.popleft() if self._scripted else None)
            )
            if scripted is not None:
                return scripted
            if key in self.accepted:
                return Reply(200, {"id": self.accepted[key]["_id"], "replay": True})
            self.accepted[key] = {**(body or {}), "_id": f"msg_{len(self.accepted) + 1}"}
            return Reply(200, {"id": self.accepted[key]["_id"]})

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True  # headers and body go out in separate writes: no 40 ms stall
            protocol_version = "HTTP/1.1"  # keep-alive, as real receivers: not one TCP connection per message

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                if server.delay:
                    time.sleep(server.delay)
                key = self.headers.get("idempotency-key")
                try:
                    body = orjson.loads(raw) if raw else None
                except orjson.JSONDecodeError:
                    body = None
                with server._lock:
                    replay = key in server.accepted
                reply = server._answer(key, body, raw, self.headers.get(SIGNATURE_HEADER))
                with server._lock:
                    server.received.append(
                        Received(
                            key,
                            self.path,
                            body,
                            self.headers.get(SIGNATURE_HEADER),
                            reply.status,
                            replay,
                            time.time(),
                        )
                    )
                payload = orjson.dumps(reply.body or {})
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the sender died mid-request
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
