"""What the HTTP adapters share: a client with timeouts, Retry-After parsing, cached access tokens."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from lifeloop.messaging.channels.base import SendResult, SendStatus
from lifeloop.store.schema import utcnow

DEFAULT_TIMEOUT = 10.0


def make_client(config: dict[str, Any], default_base_url: str) -> httpx.Client:
    """An httpx client at the configured base URL (tests point it at a local fake provider)."""
    timeout = float(config.get("timeout", DEFAULT_TIMEOUT))
    return httpx.Client(
        base_url=str(config.get("base_url") or default_base_url).rstrip("/"),
        timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
        headers={"User-Agent": "lifeloop"},
    )


def retry_after(response: httpx.Response, default: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta seconds or an HTTP date)."""
    value = response.headers.get("retry-after")
    if not value:
        return default
    if value.strip().isdigit():
        return float(value)
    try:
        return max(0.0, (parsedate_to_datetime(value) - utcnow()).total_seconds())
    except (TypeError, ValueError):
        return default


def json_or_empty(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


class TokenExpired(Exception):
    """The provider rejected our access token; it is dropped from the cache and fetched again."""


Answer = tuple[httpx.Response, dict[str, Any]]


def call_with_token(provider: str, call: Callable[[], Answer]) -> Answer | SendResult:
    """Run a WeChat/WeCom API call that needs an access token.

    What stops the call before the provider could answer it (no usable token, the token endpoint
    failing, the network, a 5xx) becomes the SendResult the outbox acts on; an answer is returned.
    """
    try:
        response, answer = call()
    except TokenExpired as error:
        return SendResult(SendStatus.PERMANENT, reason=f"{provider} rejected a fresh access token: {error}")
    except PermissionError as error:
        return SendResult(SendStatus.PERMANENT, reason=str(error))
    except httpx.HTTPStatusError as error:
        status = error.response.status_code
        kind = SendStatus.TRANSIENT if status >= 500 or status == 429 else SendStatus.PERMANENT
        return SendResult(kind, reason=f"{provider} access token HTTP {status}")
    except httpx.TransportError as error:
        return SendResult(SendStatus.TRANSIENT, reason=f"{provider} unreachable: {error!r}")
    if response.status_code >= 500:
        return SendResult(SendStatus.TRANSIENT, reason=f"{provider} HTTP {response.status_code}")
    return response, answer


class AccessTokenCache:
    """Access tokens shared by every adapter of one app (WeChat and WeCom allow ~2000 fetches a day).

    Tokens live ``expires_in`` seconds minus a margin; ``invalidate`` drops a token the provider
    rejected (errcode 40001/42001) so the next call fetches a fresh one.
    """

    margin = 300.0

    def __init__(self) -> None:
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def get(self, key: str, fetch: Callable[[], tuple[str, float]]) -> str:
        with self._lock:  # one fetch at a time per process, so a burst of sends costs one token call
            cached = self._tokens.get(key)
            if cached and cached[1] > time.monotonic():
                return cached[0]
            token, expires_in = fetch()
            self._tokens[key] = (token, time.monotonic() + max(0.0, expires_in - self.margin))
            return token

    def invalidate(self, key: str, token: str) -> None:
        with self._lock:
            if self._tokens.get(key, ("",))[0] == token:
                del self._tokens[key]
