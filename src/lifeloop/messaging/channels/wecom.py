"""WeCom (企业微信) customer contact: welcome messages and 1-on-1 messages through an advisor.

- ``content.welcome_code`` (from the "add external contact" callback, valid 20 seconds) sends the
  welcome message with ``externalcontact/send_welcome_msg``;
- otherwise ``externalcontact/add_msg_template`` creates a 1-on-1 message task for the advisor
  (``content.sender`` or the configured ``sender``), which WeCom delivers once the advisor confirms
  it in the app, as WeCom requires. Identical messages go in one task for up to 10,000 customers
  (``multicast``); WeCom names those it refused (not the advisor's contacts) in ``fail_list``.
  WeCom takes no retry key: a task whose answer was lost is created again on the retry, and the
  advisor sees it twice (a LINE multicast, with its retry key, cannot repeat).
Access tokens come from ``gettoken`` and are cached for their lifetime, refreshed when rejected.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import httpx

from lifeloop.messaging.channels.base import OutboundMessage, SendResult, SendStatus
from lifeloop.messaging.channels.http import (
    AccessTokenCache,
    TokenExpired,
    call_with_token,
    json_or_empty,
    make_client,
)

API_BASE_URL = "https://qyapi.weixin.qq.com"
MAX_TASK_RECIPIENTS = 10_000  # external_userid per add_msg_template task, WeCom's documented limit
TOKENS = AccessTokenCache()


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()[:16]


# errcodes: https://developer.work.weixin.qq.com/document/path/90313
_TOKEN_ERRORS = {40001, 40014, 42001}
_RATE_LIMITS = {45009, 45033, 45035}
_BUSY = {-1}
_BLOCKED = {84061}  # not an external contact of this advisor
FAIL_LIST_REASON = "WeCom fail_list: not a contact of this advisor"
# 41051: the welcome was already sent (by another app, or a retry): a welcome_code works once.


def classify_errcode(errcode: int, errmsg: str) -> SendResult:
    reason = f"WeCom errcode {errcode}: {errmsg}"
    if errcode == 0:
        return SendResult(SendStatus.DELIVERED)
    if errcode in _RATE_LIMITS:
        return SendResult(SendStatus.RATE_LIMITED, retry_after=60.0, reason=reason)
    if errcode in _BUSY:
        return SendResult(SendStatus.TRANSIENT, reason=reason)
    if errcode in _BLOCKED:
        return SendResult(SendStatus.BLOCKED, reason=reason)
    return SendResult(SendStatus.PERMANENT, reason=reason)


def wecom_payload(content: dict[str, Any]) -> dict[str, Any]:
    """The text and attachments parts shared by both endpoints."""
    payload: dict[str, Any] = {}
    if content.get("text"):
        payload["text"] = {"content": str(content["text"])}
    if content.get("attachments"):
        payload["attachments"] = list(content["attachments"])
    if not payload:
        raise ValueError("WeCom content needs 'text' and/or 'attachments'")
    return payload


class WeComAdapter:
    channel = "wecom"

    def __init__(self, config: dict[str, Any]) -> None:
        self.corp_id = str(config.get("corp_id") or "")
        self.secret = str(config.get("secret") or "")
        if not self.corp_id or not self.secret:
            raise ValueError("WeCom needs corp_id and secret (the customer contact app's secret)")
        self.sender = config.get("sender")
        self.client = make_client(config, API_BASE_URL)
        self._cache_key = f"wecom:{self.client.base_url}:{self.corp_id}:{_digest(self.secret)}"

    def _fetch_token(self) -> tuple[str, float]:
        response = self.client.get(
            "/cgi-bin/gettoken", params={"corpid": self.corp_id, "corpsecret": self.secret}
        )
        response.raise_for_status()
        body = json_or_empty(response)
        if body.get("errcode", 0) != 0 or not body.get("access_token"):
            raise PermissionError(
                f"WeCom gettoken failed: errcode {body.get('errcode')}: {body.get('errmsg')}"
            )
        return str(body["access_token"]), float(body.get("expires_in", 7200))

    def _call(self, path: str, payload: dict[str, Any]) -> tuple[httpx.Response, dict[str, Any]]:
        token = TOKENS.get(self._cache_key, self._fetch_token)
        response = self.client.post(path, params={"access_token": token}, json=payload)
        body = json_or_empty(response)
        if body.get("errcode") in _TOKEN_ERRORS:
            TOKENS.invalidate(self._cache_key, token)
            raise TokenExpired(str(body.get("errmsg")))
        return response, body

    def call(self, path: str, payload: dict[str, Any]) -> tuple[httpx.Response, dict[str, Any]]:
        """POST with a cached token, fetching a new one once if WeCom says it expired."""
        try:
            return self._call(path, payload)
        except TokenExpired:
            return self._call(path, payload)

    def send(self, message: OutboundMessage) -> SendResult:
        content = message.content
        try:
            body = wecom_payload(content)
        except ValueError as error:
            return SendResult(SendStatus.PERMANENT, reason=str(error))
        if content.get("welcome_code"):
            payload = {"welcome_code": content["welcome_code"], **body}
            return self._answer("/cgi-bin/externalcontact/send_welcome_msg", payload, [message.recipient])
        return self._task([message.recipient], content, body)

    def multicast(
        self, recipients: Sequence[str], content: dict[str, Any], *, idempotency_key: str
    ) -> SendResult:
        """One advisor task for identical messages to many customers (``idempotency_key`` is unused:
        WeCom has no retry key)."""
        if not 1 <= len(recipients) <= MAX_TASK_RECIPIENTS:
            return SendResult(
                SendStatus.PERMANENT, reason=f"a WeCom task takes 1 to {MAX_TASK_RECIPIENTS} customers"
            )
        try:
            body = wecom_payload(content)
        except ValueError as error:
            return SendResult(SendStatus.PERMANENT, reason=str(error))
        return self._task(list(recipients), content, body)

    def _task(self, recipients: list[str], content: dict[str, Any], body: dict[str, Any]) -> SendResult:
        sender = content.get("sender") or self.sender
        if not sender:
            return SendResult(SendStatus.PERMANENT, reason="no advisor userid: set content.sender or sender")
        payload = {"chat_type": "single", "external_userid": recipients, "sender": sender, **body}
        return self._answer("/cgi-bin/externalcontact/add_msg_template", payload, recipients)

    def _answer(self, path: str, payload: dict[str, Any], recipients: list[str]) -> SendResult:
        called = call_with_token("WeCom", lambda: self.call(path, payload))
        if isinstance(called, SendResult):
            return called
        response, answer = called
        if response.status_code == 429:
            return SendResult(SendStatus.RATE_LIMITED, retry_after=60.0, reason="WeCom HTTP 429")
        result = classify_errcode(int(answer.get("errcode", -1)), str(answer.get("errmsg", "no errcode")))
        if result.status is not SendStatus.DELIVERED:
            return result
        refused = frozenset(answer.get("fail_list") or []) & set(recipients)
        if len(recipients) == 1 and refused:
            return SendResult(SendStatus.BLOCKED, reason=FAIL_LIST_REASON)
        return SendResult(SendStatus.DELIVERED, provider_message_id=answer.get("msgid"), refused=refused)

    def close(self) -> None:
        self.client.close()
