"""A local imitation of the LINE Messaging API, so the demo's messages really leave the outbox.

The demo workspace's LINE channel points at it (``settings.base_url``): the delivery worker sends
through the real LINE adapter over HTTP, and this answers as LINE does — ``Authorization: Bearer``
with the channel access token, ``X-Line-Retry-Key`` (a repeated key is answered 409 with the accepted
request's id, as LINE de-duplicates), push answered ``{"sentMessages": [...]}``, multicast ``{}``,
rich menu links ``{}``. Nothing leaves the machine; it only counts what it was asked to send.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

HOST = "127.0.0.1"
_RICH_MENU = re.compile(r"^/v2/bot/user/[^/]+/richmenu/[^/]+$")


class LineImitation:
    """An HTTP server on a free port of 127.0.0.1, in a daemon thread; ``with LineImitation(token):``."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.lock = threading.Lock()
        self.requests: Counter[str] = Counter()  # accepted requests per kind: push, multicast, rich_menu
        self.delivered = 0  # messages that would have reached a user (recipients x message objects)
        self.recipients: set[str] = set()
        self.accepted_keys: dict[str, str] = {}  # X-Line-Retry-Key -> request id
        self._server = ThreadingHTTPServer((HOST, 0), _handler(self))
        self._server.daemon_threads = True
        self.url = f"http://{HOST}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="line-imitation", daemon=True)

    def start(self) -> LineImitation:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(5)
        self._server.server_close()

    def __enter__(self) -> LineImitation:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- what LINE would answer --------------------------------------------------------------------

    def answer(
        self, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """(status, JSON body, headers) for one request, as LINE answers it."""
        if headers.get("authorization") != f"Bearer {self.token}":
            return 401, {"message": "Authentication failed due to the following reason: invalid token."}, {}
        if _RICH_MENU.match(path):
            with self.lock:
                self.requests["rich_menu"] += 1
            return 200, {}, {}
        if path not in ("/v2/bot/message/push", "/v2/bot/message/multicast"):
            return 404, {"message": "Not found"}, {}
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return 400, {"message": "The request body has 1 error(s)"}, {}
        messages = payload.get("messages") if isinstance(payload, dict) else None
        if not isinstance(messages, list) or not 1 <= len(messages) <= 5:
            return 400, {"message": "The request body has 1 error(s)"}, {}
        to = payload.get("to")
        multicast = path.endswith("/multicast")
        users = to if multicast else [to]
        if (
            not isinstance(users, list)
            or not 1 <= len(users) <= 500
            or not all(isinstance(u, str) and u.startswith(("U", "C", "R")) for u in users)
        ):
            return 400, {"message": "The property, 'to', in the request body is invalid"}, {}
        key = headers.get("x-line-retry-key")
        request_id = uuid.uuid4().hex
        with self.lock:
            if key and key in self.accepted_keys:
                accepted = {"x-line-accepted-request-id": self.accepted_keys[key]}
                return 409, {"message": "The retry key is already accepted"}, accepted
            if key:
                self.accepted_keys[key] = request_id
            self.requests["multicast" if multicast else "push"] += 1
            first = self.delivered + 1
            self.delivered += len(users) * len(messages)
            self.recipients.update(users)
        ids = {"x-line-request-id": request_id}
        if multicast:
            return 200, {}, ids
        sent = [{"id": str(first + i), "quoteToken": uuid.uuid4().hex} for i in range(len(messages))]
        return 200, {"sentMessages": sent}, ids


def _handler(line: LineImitation) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the adapter's client reuses its connections

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, answer, extra = line.answer(self.path.split("?", 1)[0], headers, body)
            data = orjson.dumps(answer)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the demo's terminal shows the guide, not a line per message."""

    return Handler
