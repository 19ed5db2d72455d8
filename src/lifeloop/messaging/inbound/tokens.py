"""Signed tokens for e-mail tracking links and unsubscribe links.

A token is ``base64url(JSON payload) + "." + base64url(HMAC-SHA256)[:22]`` under a key derived from
``LIFELOOP_SECRET_KEY``: it names the workspace, recipient and message it stands for, cannot be
guessed or altered (a click token carries its target URL, so the redirect is never open), and needs
no lookup table.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

import orjson

from lifeloop.messaging.channels.config import derive_key

KINDS = ("open", "click", "unsubscribe")


class BadToken(Exception):
    pass


@dataclass(frozen=True, slots=True)
class TrackingToken:
    kind: str  # open | click | unsubscribe
    workspace_id: int
    channel: str  # the channel the link was sent on (email)
    recipient: str  # the address it was sent to
    message: str  # the outbound idempotency key (one per delivery)
    user_id: str | None = None
    url: str | None = None  # click target

    def payload(self) -> dict[str, Any]:
        data = {
            "k": self.kind,
            "w": self.workspace_id,
            "c": self.channel,
            "r": self.recipient,
            "m": self.message,
        }
        if self.user_id:
            data["u"] = self.user_id
        if self.url:
            data["l"] = self.url
        return data


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(body: str) -> str:
    return _b64(hmac.new(derive_key("tracking-links"), body.encode(), hashlib.sha256).digest())[:22]


def sign(token: TrackingToken) -> str:
    if token.kind not in KINDS:
        raise ValueError(f"token kind must be one of {KINDS}")
    body = _b64(orjson.dumps(token.payload()))
    return f"{body}.{_mac(body)}"


def verify(text: str, *, kind: str) -> TrackingToken:
    """The token's content, or BadToken when it was not signed by us or is of another kind."""
    body, _, mac = text.partition(".")
    if not body or not mac or not hmac.compare_digest(_mac(body), mac):
        raise BadToken("link signature does not match")
    try:
        data = orjson.loads(_unb64(body))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise BadToken("link payload is unreadable") from None
    if not isinstance(data, dict) or data.get("k") != kind:
        raise BadToken(f"not a {kind} link")
    return TrackingToken(
        kind=data["k"],
        workspace_id=int(data["w"]),
        channel=str(data["c"]),
        recipient=str(data["r"]),
        message=str(data["m"]),
        user_id=data.get("u"),
        url=data.get("l"),
    )
