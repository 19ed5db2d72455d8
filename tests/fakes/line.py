"""A fake LINE Messaging API: push and multicast, with LINE's auth, payload rules and retry keys."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.provider import FakeProvider

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
NOT_FRIEND = "The user hasn't added the LINE Official Account as a friend."


class FakeLine(FakeProvider):
    def __init__(self, token: str = "line-token") -> None:
        super().__init__()
        self.token = token
        self.not_friends: set[str] = set()  # users who never added or blocked the account
        self.accepted_keys: dict[str, str] = {}  # X-Line-Retry-Key → request id of the accepted request
        self.delivered: list[tuple[str, dict[str, Any]]] = []  # (user id, message) actually sent
        self.rich_menus: dict[str, str] = {}  # user id → the rich menu linked to them
        # Seconds between accepting a message and answering: a client that gives up (or dies) meanwhile
        # does not know that the message went out, as with a slow or far-away LINE.
        self.answer_delay = 0.0
        self.app = Starlette(
            routes=[
                Route("/v2/bot/message/push", self.push, methods=["POST"]),
                Route("/v2/bot/message/multicast", self.multicast, methods=["POST"]),
                Route("/v2/bot/user/{user}/richmenu/{menu}", self.link_rich_menu, methods=["POST"]),
            ]
        )

    def _error(self, status: int, message: str, **headers: str) -> Response:
        return JSONResponse({"message": message}, status_code=status, headers=headers)

    def _check(self, request: Request, payload: Any) -> Response | None:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return self._error(401, "Authentication failed due to the following reason: invalid token.")
        key = request.headers.get("x-line-retry-key")
        if key is not None and not _UUID.match(key):
            return self._error(400, "The retry key is not a valid UUID")
        if key in self.accepted_keys:
            return self._error(
                409,
                "The retry key is already accepted",
                **{"x-line-accepted-request-id": self.accepted_keys[key]},
            )
        messages = payload.get("messages") if isinstance(payload, dict) else None
        if not isinstance(messages, list) or not 1 <= len(messages) <= 5:
            return self._error(400, "The request body has 1 error(s)")
        if any(not isinstance(m, dict) or "type" not in m for m in messages):
            return self._error(400, "The request body has 1 error(s)")
        for m in messages:
            if m["type"] == "flex" and (not m.get("altText") or not isinstance(m.get("contents"), dict)):
                return self._error(400, "The request body has 1 error(s)")
        return self.take_scripted()

    def _accept(self, request: Request, users: list[str], messages: list[dict[str, Any]]) -> Response:
        request_id = uuid.uuid4().hex
        key = request.headers.get("x-line-retry-key")
        if key:
            self.accepted_keys[key] = request_id
        sent = []
        for user in users:
            for message in messages:
                self.delivered.append((user, message))
                sent.append({"id": str(len(self.delivered)), "quoteToken": uuid.uuid4().hex})
        return JSONResponse({"sentMessages": sent}, headers={"x-line-request-id": request_id})

    async def push(self, request: Request) -> Response:
        payload = await self.record(request)
        if (error := self._check(request, payload)) is not None:
            return error
        to = payload.get("to")
        if not isinstance(to, str) or not to.startswith(("U", "C", "R")):
            return self._error(400, "The property, 'to', in the request body is invalid")
        if to in self.not_friends:
            return self._error(400, NOT_FRIEND)
        return await self._answer(self._accept(request, [to], payload["messages"]))

    async def multicast(self, request: Request) -> Response:
        payload = await self.record(request)
        if (error := self._check(request, payload)) is not None:
            return error
        to = payload.get("to")
        if not isinstance(to, list) or not 1 <= len(to) <= 500:
            return self._error(400, "The property, 'to', in the request body is invalid")
        # As LINE does: multicast skips users who cannot receive, without telling which.
        return await self._answer(
            self._accept(request, [u for u in to if u not in self.not_friends], payload["messages"])
        )

    async def _answer(self, response: Response) -> Response:
        if self.answer_delay:
            await asyncio.sleep(self.answer_delay)
        return response

    async def link_rich_menu(self, request: Request) -> Response:
        await self.record(request)
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return self._error(401, "Authentication failed due to the following reason: invalid token.")
        if (scripted := self.take_scripted()) is not None:
            return scripted
        menu = request.path_params["menu"]
        if not menu.startswith("richmenu-"):
            return self._error(400, "richmenu not found")
        self.rich_menus[request.path_params["user"]] = menu
        return JSONResponse({})
