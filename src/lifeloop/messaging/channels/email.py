"""E-mail over SMTP: multipart text + HTML, RFC 8058 one-click unsubscribe, open and click tracking.

Tracking and unsubscribe links point at this deployment (``public_url``) and carry signed tokens
(``inbound/tokens.py``), so the inbound routes turn them into events without any lookup table.
Write ``%%unsubscribe_url%%`` in a template to place the visible unsubscribe link yourself.
"""

from __future__ import annotations

import hashlib
import html
import re
import smtplib
import ssl
import threading
from email.message import EmailMessage
from email.utils import formataddr, formatdate
from typing import Any

from lifeloop.messaging.channels.base import OutboundMessage, SendResult, SendStatus
from lifeloop.messaging.inbound.tokens import TrackingToken, sign

UNSUBSCRIBE_PLACEHOLDER = "%%unsubscribe_url%%"
_HREF = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(https?://[^"'\s>]+)\2""", re.IGNORECASE)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
_BLOCKED_CODES = {550, 551, 553}  # mailbox unavailable / not local / name not allowed


def _smtp_result(code: int, text: str | bytes, *, recipient_refused: bool = False) -> SendResult:
    detail = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
    reason = f"SMTP {code}: {detail}"
    if 400 <= code < 500:
        return SendResult(SendStatus.TRANSIENT, reason=reason)
    if recipient_refused and code in _BLOCKED_CODES:
        return SendResult(SendStatus.BLOCKED, reason=reason)
    return SendResult(SendStatus.PERMANENT, reason=reason)


class EmailAdapter:
    channel = "email"

    def __init__(self, config: dict[str, Any]) -> None:
        self.host = str(config.get("host") or "")
        self.from_address = str(config.get("from_address") or "")
        self.public_url = str(config.get("public_url") or "").rstrip("/")
        if not self.host or not self.from_address or not self.public_url:
            raise ValueError("e-mail needs host, from_address and public_url (where lifeloop is reachable)")
        self.port = int(config.get("port") or 587)
        self.security = str(config.get("security") or "starttls")  # starttls | ssl | none
        if self.security not in ("starttls", "ssl", "none"):
            raise ValueError("security must be starttls, ssl or none")
        self.username = config.get("username")
        self.password = config.get("password")
        self.from_name = config.get("from_name")
        self.unsubscribe_mailto = config.get("unsubscribe_mailto")
        self.track_opens = bool(config.get("track_opens", True))
        self.track_clicks = bool(config.get("track_clicks", True))
        self.workspace_id = int(config["workspace_id"])
        self.timeout = float(config.get("timeout", 30.0))
        self._smtp: smtplib.SMTP | None = None
        self._lock = threading.Lock()

    # -- building --------------------------------------------------------------------------------

    def _token(self, message: OutboundMessage, kind: str, url: str | None = None) -> str:
        user_id = message.metadata.get("user_id")
        return sign(
            TrackingToken(
                kind=kind,
                workspace_id=self.workspace_id,
                channel="email",
                recipient=message.recipient,
                message=message.idempotency_key,
                user_id=str(user_id) if user_id else None,
                url=url,
            )
        )

    def _tracked_html(self, message: OutboundMessage, body: str) -> str:
        if self.track_clicks:

            def rewrite(match: re.Match[str]) -> str:
                target = html.unescape(match.group(3))
                if target.startswith(f"{self.public_url}/u/"):  # our unsubscribe link stays direct
                    return match.group(0)
                link = f"{self.public_url}/t/c/{self._token(message, 'click', target)}"
                return f"{match.group(1)}{match.group(2)}{link}{match.group(2)}"

            body = _HREF.sub(rewrite, body)
        if self.track_opens:
            pixel = (
                f'<img src="{self.public_url}/t/o/{self._token(message, "open")}.gif" '
                'width="1" height="1" alt="" style="display:block;border:0">'
            )
            body, found = _BODY_END.subn(lambda m: pixel + m.group(0), body, count=1)
            if not found:
                body += pixel
        return body

    def build(self, message: OutboundMessage) -> EmailMessage:
        """The MIME message as it will be sent (also what a preview shows)."""
        content = message.content
        subject, text, body_html = content.get("subject"), content.get("text"), content.get("html")
        if not subject or not (text or body_html):
            raise ValueError("e-mail content needs subject and text and/or html")
        unsubscribe = f"{self.public_url}/u/{self._token(message, 'unsubscribe')}"
        email = EmailMessage()
        email["From"] = (
            formataddr((self.from_name, self.from_address)) if self.from_name else self.from_address
        )
        email["To"] = message.recipient
        email["Subject"] = str(subject)
        email["Date"] = formatdate(localtime=False, usegmt=True)
        # The same Message-ID on every attempt lets receivers drop a duplicate of a retried send.
        digest = hashlib.sha256(message.idempotency_key.encode()).hexdigest()[:32]
        email["Message-ID"] = f"<{digest}@{self.from_address.rpartition('@')[2] or 'lifeloop'}>"
        targets = [f"<{unsubscribe}>"]
        if self.unsubscribe_mailto:
            targets.append(f"<mailto:{self.unsubscribe_mailto}?subject=unsubscribe>")
        email["List-Unsubscribe"] = ", ".join(targets)
        email["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"  # RFC 8058
        plain = str(text) if text else re.sub(r"<[^>]+>", "", str(body_html))
        email.set_content(plain.replace(UNSUBSCRIBE_PLACEHOLDER, unsubscribe))
        if body_html:
            body = str(body_html).replace(UNSUBSCRIBE_PLACEHOLDER, html.escape(unsubscribe))
            email.add_alternative(self._tracked_html(message, body), subtype="html")
        return email

    # -- sending ---------------------------------------------------------------------------------

    def _connect(self) -> smtplib.SMTP:
        if self._smtp is not None:
            return self._smtp
        smtp: smtplib.SMTP
        if self.security == "ssl":
            smtp = smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout, context=ssl.create_default_context()
            )
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            if self.security == "starttls":
                smtp.starttls(context=ssl.create_default_context())
        if self.username:
            smtp.login(str(self.username), str(self.password or ""))
        self._smtp = smtp
        return smtp

    def _drop(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()

    def send(self, message: OutboundMessage) -> SendResult:
        try:
            email = self.build(message)
        except ValueError as error:
            return SendResult(SendStatus.PERMANENT, reason=str(error))
        with self._lock:
            try:
                self._connect().send_message(email, from_addr=self.from_address, to_addrs=[message.recipient])
            except smtplib.SMTPRecipientsRefused as error:
                self._reset()
                code, text = next(iter(error.recipients.values()))
                return _smtp_result(code, text, recipient_refused=True)
            except smtplib.SMTPResponseException as error:
                self._drop()
                return _smtp_result(error.smtp_code, error.smtp_error)
            except (smtplib.SMTPException, OSError) as error:
                self._drop()
                return SendResult(SendStatus.TRANSIENT, reason=f"SMTP connection failed: {error!r}")
        return SendResult(SendStatus.DELIVERED, provider_message_id=str(email["Message-ID"]))

    def _reset(self) -> None:
        """Keep the session for the next message, clean of the refused transaction."""
        try:
            if self._smtp is not None:
                self._smtp.rset()
        except (smtplib.SMTPException, OSError):
            self._drop()

    def close(self) -> None:
        with self._lock:
            self._drop()
