"""A fake HTTP SMS provider with its own body shape, API-key header and error answers."""

from __future__ import annotations

import uuid

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.provider import FakeProvider


class FakeSms(FakeProvider):
    """Takes ``{"phone", "content", "sign"}`` with ``X-Api-Key``; answers ``{"data": {"id": …}}``."""

    def __init__(self, api_key: str = "sms-key") -> None:
        super().__init__()
        self.api_key = api_key
        self.opted_out: set[str] = set()
        self.sent: list[dict[str, str]] = []
        self.app = Starlette(routes=[Route("/v1/sms/send", self.send_sms, methods=["POST"])])

    async def send_sms(self, request: Request) -> Response:
        payload = await self.record(request)
        if request.headers.get("x-api-key") != self.api_key:
            return JSONResponse({"error": "invalid api key"}, status_code=401)
        if (scripted := self.take_scripted()) is not None:
            return scripted
        if not isinstance(payload, dict) or not {"phone", "content", "sign"} <= payload.keys():
            return JSONResponse({"error": "phone, content and sign are required"}, status_code=400)
        if not str(payload["phone"]).startswith("+"):
            return JSONResponse({"error": "phone must be E.164"}, status_code=400)
        if payload["phone"] in self.opted_out:
            return JSONResponse({"error": "recipient opted out"}, status_code=410)
        self.sent.append(payload)
        return JSONResponse({"data": {"id": uuid.uuid4().hex}}, status_code=202)
