"""One router per console page (or group of pages); ``PAGE_ROUTERS`` is what the app includes."""

from __future__ import annotations

from fastapi import APIRouter

from lifeloop.web.console.pages import overview, session, settings

PAGE_ROUTERS: list[APIRouter] = [session.router, overview.router, settings.router]
