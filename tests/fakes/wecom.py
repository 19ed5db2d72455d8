"""A fake WeCom API (gettoken, send_welcome_msg, add_msg_template) and WeCom's callback sender.

The callback side encrypts with its own, independent implementation of Tencent's scheme, so the
adapter's crypto is tested against a second implementation, not against itself.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import struct
import time
import uuid
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.provider import FakeProvider


class FakeWeCom(FakeProvider):
    def __init__(self, corp_id: str = "ww0123456789abcdef", secret: str = "contact-secret") -> None:
        super().__init__()
        self.corp_id, self.secret = corp_id, secret
        self.tokens: dict[str, float] = {}  # access_token → expiry (monotonic)
        self.token_fetches = 0
        self.advisors = {"zhangsan"}
        self.contacts: dict[str, set[str]] = {"zhangsan": set()}  # advisor → external_userids
        self.welcome_codes: dict[str, str] = {}  # welcome_code → external_userid, single use
        self.app = Starlette(
            routes=[
                Route("/cgi-bin/gettoken", self.gettoken, methods=["GET"]),
                Route("/cgi-bin/externalcontact/send_welcome_msg", self.welcome, methods=["POST"]),
                Route("/cgi-bin/externalcontact/add_msg_template", self.template, methods=["POST"]),
            ]
        )

    def add_contact(self, external_userid: str, advisor: str = "zhangsan") -> str:
        """A customer adds the advisor; returns the welcome code WeCom would put in the callback."""
        self.contacts.setdefault(advisor, set()).add(external_userid)
        code = secrets.token_hex(8)
        self.welcome_codes[code] = external_userid
        return code

    def expire_tokens(self) -> None:
        self.tokens = {token: 0.0 for token in self.tokens}

    async def gettoken(self, request: Request) -> Response:
        await self.record(request)
        q = request.query_params
        if q.get("corpid") != self.corp_id:
            return JSONResponse({"errcode": 40013, "errmsg": "invalid corpid"})
        if q.get("corpsecret") != self.secret:
            return JSONResponse({"errcode": 40001, "errmsg": "invalid secret"})
        self.token_fetches += 1
        token = uuid.uuid4().hex
        self.tokens[token] = time.monotonic() + 7200
        return JSONResponse({"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": 7200})

    def _auth(self, request: Request) -> Response | None:
        token = request.query_params.get("access_token", "")
        if token not in self.tokens:
            return JSONResponse({"errcode": 40014, "errmsg": "invalid access_token"})
        if self.tokens[token] <= time.monotonic():
            return JSONResponse({"errcode": 42001, "errmsg": "access_token expired"})
        return self.take_scripted()

    async def welcome(self, request: Request) -> Response:
        payload = await self.record(request)
        if (error := self._auth(request)) is not None:
            return error
        if not payload.get("text") and not payload.get("attachments"):
            return JSONResponse({"errcode": 41033, "errmsg": "missing text or attachments"})
        if self.welcome_codes.pop(payload.get("welcome_code", ""), None) is None:
            return JSONResponse({"errcode": 41051, "errmsg": "invalid welcome_code"})
        return JSONResponse({"errcode": 0, "errmsg": "ok"})

    async def template(self, request: Request) -> Response:
        payload = await self.record(request)
        if (error := self._auth(request)) is not None:
            return error
        if payload.get("chat_type", "single") != "single" or not isinstance(
            payload.get("external_userid"), list
        ):
            return JSONResponse({"errcode": 40058, "errmsg": "invalid external_userid"})
        if payload.get("sender") not in self.advisors:
            return JSONResponse({"errcode": 60111, "errmsg": "invalid sender userid"})
        known = self.contacts.get(payload["sender"], set())
        fail = [e for e in payload["external_userid"] if e not in known]
        return JSONResponse({"errcode": 0, "errmsg": "ok", "fail_list": fail, "msgid": uuid.uuid4().hex})


class WeComCallbackSender:
    """What WeCom's servers do when they call a company's callback URL."""

    def __init__(self, token: str, encoding_aes_key: str, corp_id: str) -> None:
        self.token, self.corp_id = token, corp_id
        self.key = base64.b64decode(encoding_aes_key + "=")

    @staticmethod
    def new_key() -> str:
        return base64.b64encode(os.urandom(32)).decode()[:43]

    def signature(self, timestamp: str, nonce: str, encrypted: str) -> str:
        return hashlib.sha1("".join(sorted([self.token, timestamp, nonce, encrypted])).encode()).hexdigest()

    def encrypt(self, text: str) -> str:
        body = text.encode()
        plain = os.urandom(16) + struct.pack(">I", len(body)) + body + self.corp_id.encode()
        pad = 32 - len(plain) % 32
        enc = Cipher(algorithms.AES(self.key), modes.CBC(self.key[:16])).encryptor()
        return base64.b64encode(enc.update(plain + bytes([pad]) * pad) + enc.finalize()).decode()

    def params(self, encrypted: str) -> dict[str, str]:
        timestamp, nonce = str(int(time.time())), str(secrets.randbelow(10**9))
        return {
            "msg_signature": self.signature(timestamp, nonce, encrypted),
            "timestamp": timestamp,
            "nonce": nonce,
        }

    def envelope(self, inner_xml: str, agent_id: str = "1000002") -> tuple[bytes, dict[str, str]]:
        encrypted = self.encrypt(inner_xml)
        xml = (
            f"<xml><ToUserName><![CDATA[{self.corp_id}]]></ToUserName>"
            f"<Encrypt><![CDATA[{encrypted}]]></Encrypt><AgentID><![CDATA[{agent_id}]]></AgentID></xml>"
        )
        return xml.encode(), self.params(encrypted)


def add_contact_xml(corp_id: str, advisor: str, external: str, welcome_code: str, state: str = "") -> str:
    return (
        f"<xml><ToUserName><![CDATA[{corp_id}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>"
        f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
        "<Event><![CDATA[change_external_contact]]></Event>"
        "<ChangeType><![CDATA[add_external_contact]]></ChangeType>"
        f"<UserID><![CDATA[{advisor}]]></UserID><ExternalUserID><![CDATA[{external}]]></ExternalUserID>"
        f"<State><![CDATA[{state}]]></State><WelcomeCode><![CDATA[{welcome_code}]]></WelcomeCode></xml>"
    )


def welcome_payload(fake: FakeWeCom) -> dict[str, Any]:
    calls = fake.calls("/cgi-bin/externalcontact/send_welcome_msg")
    return calls[-1].json if calls else {}
