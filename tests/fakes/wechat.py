"""A fake WeChat official account API: cgi-bin/token and template message send."""

from __future__ import annotations

import time
import uuid

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.provider import FakeProvider


class FakeWeChat(FakeProvider):
    def __init__(self, app_id: str = "wx1234567890abcdef", app_secret: str = "app-secret") -> None:
        super().__init__()
        self.app_id, self.app_secret = app_id, app_secret
        self.tokens: dict[str, float] = {}
        self.token_fetches = 0
        self.templates = {"TPL_ORDER_SHIPPED"}
        self.followers = {"oFOLLOWER1", "oFOLLOWER2"}
        self.refused: set[str] = set()  # followers who turned template messages off
        self.sent: list[dict[str, object]] = []
        self.app = Starlette(
            routes=[
                Route("/cgi-bin/token", self.token, methods=["GET"]),
                Route("/cgi-bin/message/template/send", self.send, methods=["POST"]),
            ]
        )

    def expire_tokens(self) -> None:
        self.tokens = {token: 0.0 for token in self.tokens}

    async def token(self, request: Request) -> Response:
        await self.record(request)
        q = request.query_params
        if q.get("grant_type") != "client_credential":
            return JSONResponse({"errcode": 40002, "errmsg": "invalid grant_type"})
        if q.get("appid") != self.app_id or q.get("secret") != self.app_secret:
            return JSONResponse({"errcode": 40125, "errmsg": "invalid appsecret"})
        self.token_fetches += 1
        token = uuid.uuid4().hex
        self.tokens[token] = time.monotonic() + 7200
        return JSONResponse({"access_token": token, "expires_in": 7200})

    async def send(self, request: Request) -> Response:
        payload = await self.record(request)
        token = request.query_params.get("access_token", "")
        if token not in self.tokens:
            return JSONResponse({"errcode": 40001, "errmsg": "invalid credential, access_token is invalid"})
        if self.tokens[token] <= time.monotonic():
            return JSONResponse({"errcode": 42001, "errmsg": "access_token expired"})
        if (scripted := self.take_scripted()) is not None:
            return scripted
        if payload.get("template_id") not in self.templates:
            return JSONResponse({"errcode": 40037, "errmsg": "invalid template_id"})
        if not isinstance(payload.get("data"), dict) or any(
            not isinstance(v, dict) or "value" not in v for v in payload["data"].values()
        ):
            return JSONResponse({"errcode": 47001, "errmsg": "data format error"})
        if payload.get("touser") not in self.followers:
            return JSONResponse({"errcode": 43004, "errmsg": "require subscribe"})
        if payload["touser"] in self.refused:
            return JSONResponse({"errcode": 43101, "errmsg": "user refuse to accept the msg"})
        self.sent.append(payload)
        return JSONResponse({"errcode": 0, "errmsg": "ok", "msgid": 200228332 + len(self.sent)})
