"""Inbound channel endpoints: LINE and WeCom webhooks, e-mail open/click tracking, unsubscribe.

These are called by providers and mail clients, not by API users: they authenticate by signature
(LINE, WeCom) or by a signed token in the URL (e-mail), never by API token.
"""

from __future__ import annotations

import base64
import html
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from lifeloop.errors import NotFound, PayloadTooLarge
from lifeloop.events.service import IngestResult
from lifeloop.messaging.inbound import service
from lifeloop.messaging.inbound.tokens import BadToken, TrackingToken, verify
from lifeloop.web.responses import JSONBody

router = APIRouter(tags=["channel webhooks"])

MAX_WEBHOOK_BYTES = 1024 * 1024
# The smallest transparent GIF (1×1), served for every open.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
_NO_STORE = {"Cache-Control": "no-store, private", "Referrer-Policy": "no-referrer"}


async def _body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_WEBHOOK_BYTES:
        raise PayloadTooLarge("webhook body is over 1 MB")
    body = await request.body()
    if len(body) > MAX_WEBHOOK_BYTES:
        raise PayloadTooLarge("webhook body is over 1 MB")
    return body


def _recorded(request: Request, result: IngestResult) -> IngestResult:
    """Wake the identity resolver, as the /v1 endpoints do, so the events reach profiles soon."""
    resolver = getattr(request.app.state, "resolver", None)
    if resolver is not None and result.accepted:
        resolver.notify()
    return result


def _result(result: IngestResult) -> JSONBody:
    return JSONBody({"success": True, "accepted": result.accepted, "duplicates": result.duplicates})


@router.post("/webhooks/line/{workspace_slug}", summary="LINE Messaging API webhook")
async def line_webhook(
    workspace_slug: str,
    request: Request,
    x_line_signature: Annotated[str | None, Header()] = None,
    name: Annotated[str | None, Query(description="channel configuration name, if not the default")] = None,
) -> JSONBody:
    """Follow, unfollow, message and postback events, verified by X-Line-Signature."""
    body = await _body(request)
    engine = request.app.state.engine
    result = await run_in_threadpool(
        service.line_webhook, engine, workspace_slug, body, x_line_signature, name=name
    )
    return _result(_recorded(request, result))


@router.get("/webhooks/wecom/{workspace_slug}", summary="WeCom callback URL verification")
async def wecom_verify(
    workspace_slug: str,
    request: Request,
    msg_signature: str,
    timestamp: str,
    nonce: str,
    echostr: str,
    name: str | None = None,
) -> PlainTextResponse:
    plain = await run_in_threadpool(
        service.wecom_verify_url,
        request.app.state.engine,
        workspace_slug,
        signature=msg_signature,
        timestamp=timestamp,
        nonce=nonce,
        echostr=echostr,
        name=name,
    )
    return PlainTextResponse(plain)


@router.post("/webhooks/wecom/{workspace_slug}", summary="WeCom encrypted callback")
async def wecom_callback(
    workspace_slug: str,
    request: Request,
    msg_signature: str,
    timestamp: str,
    nonce: str,
    name: str | None = None,
) -> PlainTextResponse:
    """External-contact changes; WeCom expects an empty 200 within 5 seconds."""
    body = await _body(request)
    result = await run_in_threadpool(
        service.wecom_callback,
        request.app.state.engine,
        workspace_slug,
        body,
        signature=msg_signature,
        timestamp=timestamp,
        nonce=nonce,
        name=name,
    )
    _recorded(request, result)
    return PlainTextResponse("")


def _token(text: str, kind: str) -> TrackingToken:
    try:
        return verify(text, kind=kind)
    except BadToken as error:
        raise NotFound(f"unknown link: {error}") from None


@router.get("/t/o/{token}.gif", summary="E-mail open pixel", include_in_schema=False)
async def email_open(token: str, request: Request) -> Response:
    parsed = _token(token, "open")
    _recorded(request, await run_in_threadpool(service.email_activity, request.app.state.engine, parsed))
    return Response(PIXEL, media_type="image/gif", headers=_NO_STORE)


@router.get("/t/c/{token}", summary="E-mail link click", include_in_schema=False)
async def email_click(token: str, request: Request) -> RedirectResponse:
    parsed = _token(token, "click")
    if not parsed.url or not parsed.url.startswith(("https://", "http://")):
        raise NotFound("unknown link: no target")
    _recorded(request, await run_in_threadpool(service.email_activity, request.app.state.engine, parsed))
    return RedirectResponse(parsed.url, status_code=302, headers=_NO_STORE)


_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><meta name="robots" content="noindex">
<title>{title}</title></head>
<body style="font-family:sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem">
<h1 style="font-size:1.4rem">{title}</h1>{body}</body></html>"""


@router.get("/u/{token}", summary="Unsubscribe confirmation page", include_in_schema=False)
async def unsubscribe_page(token: str) -> HTMLResponse:
    """A page with a button; a GET never unsubscribes, since link scanners follow every link."""
    parsed = _token(token, "unsubscribe")
    form = (
        f"<p>Stop e-mails to <strong>{html.escape(parsed.recipient)}</strong>?</p>"
        f'<form method="post" action="/u/{html.escape(token)}">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>'
    )
    return HTMLResponse(_PAGE.format(title="Unsubscribe", body=form), headers=_NO_STORE)


@router.post("/u/{token}", summary="One-click unsubscribe (RFC 8058)")
async def unsubscribe(token: str, request: Request) -> HTMLResponse:
    """What mail providers POST (``List-Unsubscribe=One-Click``) and the confirmation form submits."""
    parsed = _token(token, "unsubscribe")
    await (
        request.body()
    )  # RFC 8058: the body is List-Unsubscribe=One-Click; the signed token is the authority
    _recorded(request, await run_in_threadpool(service.email_activity, request.app.state.engine, parsed))
    body = f"<p>{html.escape(parsed.recipient)} will receive no more e-mails from us.</p>"
    return HTMLResponse(_PAGE.format(title="You are unsubscribed", body=body), headers=_NO_STORE)
