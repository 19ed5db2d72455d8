"""WeChat official account (公众号) template messages, with a cached, self-refreshing access token."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx

from lifeloop.messaging.channels.base import OutboundMessage, SendResult, SendStatus
from lifeloop.messaging.channels.http import (
    AccessTokenCache,
    Answer,
    TokenExpired,
    call_with_token,
    json_or_empty,
    make_client,
)

API_BASE_URL = "https://api.weixin.qq.com"
TOKENS = AccessTokenCache()


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()[:16]


# Global return codes: https://developers.weixin.qq.com/doc/offiaccount/Getting_Started/Global_Return_Code.html
_TOKEN_ERRORS = {40001, 40014, 42001}
_RATE_LIMITS = {45009, 45047}
_BLOCKED = {43004, 43101}  # the user unfollowed / refused template messages
_BUSY = {-1}


def classify_errcode(errcode: int, errmsg: str) -> SendResult:
    reason = f"WeChat errcode {errcode}: {errmsg}"
    if errcode == 0:
        return SendResult(SendStatus.DELIVERED)
    if errcode in _RATE_LIMITS:
        return SendResult(SendStatus.RATE_LIMITED, retry_after=3600.0, reason=reason)
    if errcode in _BUSY:
        return SendResult(SendStatus.TRANSIENT, reason=reason)
    if errcode in _BLOCKED:
        return SendResult(SendStatus.BLOCKED, reason=reason)
    return SendResult(SendStatus.PERMANENT, reason=reason)


def template_payload(openid: str, content: dict[str, Any]) -> dict[str, Any]:
    """``template_id`` and ``data`` ({key: value or {"value": …}}), optional ``url`` / ``miniprogram``."""
    if not content.get("template_id") or not isinstance(content.get("data"), dict):
        raise ValueError("WeChat content needs template_id and data")
    data = {k: v if isinstance(v, dict) else {"value": str(v)} for k, v in content["data"].items()}
    payload: dict[str, Any] = {"touser": openid, "template_id": content["template_id"], "data": data}
    for optional in ("url", "miniprogram", "client_msg_id"):
        if content.get(optional):
            payload[optional] = content[optional]
    return payload


class WeChatAdapter:
    channel = "wechat"

    def __init__(self, config: dict[str, Any]) -> None:
        self.app_id = str(config.get("app_id") or "")
        self.app_secret = str(config.get("app_secret") or "")
        if not self.app_id or not self.app_secret:
            raise ValueError("WeChat needs app_id and app_secret of the official account")
        self.client = make_client(config, API_BASE_URL)
        self._cache_key = f"wechat:{self.client.base_url}:{self.app_id}:{_digest(self.app_secret)}"

    def _fetch_token(self) -> tuple[str, float]:
        response = self.client.get(
            "/cgi-bin/token",
            params={"grant_type": "client_credential", "appid": self.app_id, "secret": self.app_secret},
        )
        response.raise_for_status()
        body = json_or_empty(response)
        if not body.get("access_token"):
            raise PermissionError(f"WeChat token failed: errcode {body.get('errcode')}: {body.get('errmsg')}")
        return str(body["access_token"]), float(body.get("expires_in", 7200))

    def _post(self, payload: dict[str, Any]) -> tuple[httpx.Response, dict[str, Any]]:
        token = TOKENS.get(self._cache_key, self._fetch_token)
        response = self.client.post(
            "/cgi-bin/message/template/send", params={"access_token": token}, json=payload
        )
        body = json_or_empty(response)
        if body.get("errcode") in _TOKEN_ERRORS:
            TOKENS.invalidate(self._cache_key, token)
            raise TokenExpired(str(body.get("errmsg")))
        return response, body

    def send(self, message: OutboundMessage) -> SendResult:
        try:
            payload = template_payload(message.recipient, message.content)
        except ValueError as error:
            return SendResult(SendStatus.PERMANENT, reason=str(error))
        # Deduplicated by WeChat for a while; the same key on every attempt of one message.
        payload.setdefault("client_msg_id", message.idempotency_key[:64])

        def post_refreshing_once() -> Answer:
            try:
                return self._post(payload)
            except TokenExpired:  # refreshed once: a token can be revoked by a fetch elsewhere
                return self._post(payload)

        called = call_with_token("WeChat", post_refreshing_once)
        if isinstance(called, SendResult):
            return called
        _response, answer = called
        result = classify_errcode(int(answer.get("errcode", -1)), str(answer.get("errmsg", "no errcode")))
        if result.status is SendStatus.DELIVERED:
            return SendResult(
                SendStatus.DELIVERED, provider_message_id=str(answer.get("msgid") or "") or None
            )
        return result

    def close(self) -> None:
        self.client.close()
