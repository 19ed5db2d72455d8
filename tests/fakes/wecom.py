"""A fake WeCom API (gettoken, send_welcome_msg, add_msg_template, message/send) and WeCom's callback
sender.

The callback side encrypts with its own, independent implementation of Tencent's scheme, so the
adapter's crypto is tested against a second implementation, not against itself.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
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
        # Self-built apps (application messages): secret → agentid; the members who can receive them.
        self.agent_secrets: dict[str, int] = {}
        self.token_agents: dict[str, int] = {}  # access_token → the agentid it was fetched for
        self.members: set[str] = set()
        self.app_messages: list[dict[str, Any]] = []  # what members received (duplicates dropped)
        self._sent_app_requests: dict[str, float] = {}  # request JSON → when, for the duplicate check
        self.app_answer_delay = 0.0  # seconds message/send waits, after delivering, before it answers
        self.app = Starlette(
            routes=[
                Route("/cgi-bin/gettoken", self.gettoken, methods=["GET"]),
                Route("/cgi-bin/externalcontact/send_welcome_msg", self.welcome, methods=["POST"]),
                Route("/cgi-bin/externalcontact/add_msg_template", self.template, methods=["POST"]),
                Route("/cgi-bin/message/send", self.message_send, methods=["POST"]),
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
        agent = self.agent_secrets.get(q.get("corpsecret", ""))
        if q.get("corpsecret") != self.secret and agent is None:
            return JSONResponse({"errcode": 40001, "errmsg": "invalid secret"})
        self.token_fetches += 1
        token = uuid.uuid4().hex
        self.tokens[token] = time.monotonic() + 7200
        if agent is not None:
            self.token_agents[token] = agent
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

    def add_app(self, agent_id: int, secret: str, members: set[str]) -> None:
        """A self-built app whose Secret fetches tokens for application messages to ``members``."""
        self.agent_secrets[secret] = agent_id
        self.members |= members

    async def message_send(self, request: Request) -> Response:
        """Application message to members (touser "a|b"), with WeCom's duplicate check: the same request
        JSON again within ``duplicate_check_interval`` is accepted and not delivered again."""
        payload = await self.record(request)
        if (error := self._auth(request)) is not None:
            return error
        if not isinstance(payload, dict):
            return JSONResponse({"errcode": 44004, "errmsg": "empty content"})
        token = request.query_params.get("access_token", "")
        if self.token_agents.get(token) != payload.get("agentid"):
            return JSONResponse(
                {"errcode": 301002, "errmsg": "not allow operate another agent with this accesstoken"}
            )
        kind = payload.get("msgtype")
        if kind not in ("text", "textcard") or not isinstance(payload.get(kind), dict):
            return JSONResponse({"errcode": 40008, "errmsg": "invalid message type"})
        users = [u for u in str(payload.get("touser") or "").split("|") if u]
        valid = [u for u in users if u in self.members]
        if not valid:
            return JSONResponse({"errcode": 81013, "errmsg": "user & party & tag all invalid"})
        invalid = "|".join(u.lower() for u in users if u not in self.members)
        body = json.dumps(payload, sort_keys=True, ensure_ascii=False)
        now = time.monotonic()
        window = float(payload.get("duplicate_check_interval") or 1800)
        with self.lock:
            first = self._sent_app_requests.get(body)
            duplicate = (
                payload.get("enable_duplicate_check") == 1 and first is not None and now - first < window
            )
            if not duplicate:
                self._sent_app_requests[body] = now
                self.app_messages += [{"touser": u, **payload} for u in valid]
        if self.app_answer_delay:
            await asyncio.sleep(self.app_answer_delay)
        return JSONResponse({"errcode": 0, "errmsg": "ok", "invaliduser": invalid, "msgid": uuid.uuid4().hex})


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
