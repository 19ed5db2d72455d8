"""One router per console page (or group of pages); ``PAGE_ROUTERS`` is what the app includes."""

from __future__ import annotations

from fastapi import APIRouter

from lifeloop.web.console.pages import analytics as analytics_page
from lifeloop.web.console.pages import broadcasts as broadcasts_page
from lifeloop.web.console.pages import channels as channels_page
from lifeloop.web.console.pages import customers as customers_page
from lifeloop.web.console.pages import engagement as engagement_page
from lifeloop.web.console.pages import (
    engagement_programs,
    journey_editor,
    overview,
    session,
    settings,
    templates_page,
)
from lifeloop.web.console.pages import journeys as journeys_page
from lifeloop.web.console.pages import lifecycle as lifecycle_page
from lifeloop.web.console.pages import policy as policy_page
from lifeloop.web.console.pages import segments as segments_page
from lifeloop.web.console.pages import tags as tags_page

PAGE_ROUTERS: list[APIRouter] = [session.router, overview.router, settings.router]
PAGE_ROUTERS += [lifecycle_page.router, journey_editor.router, journeys_page.router]  # programs
PAGE_ROUTERS.append(broadcasts_page.router)
PAGE_ROUTERS.append(analytics_page.router)  # analytics
PAGE_ROUTERS += [tags_page.router, segments_page.router]  # audience: tags, segments
PAGE_ROUTERS.append(customers_page.router)  # customers
PAGE_ROUTERS += [templates_page.router, channels_page.router, policy_page.router]  # messaging
PAGE_ROUTERS += [engagement_page.router, engagement_programs.router]  # engagement
