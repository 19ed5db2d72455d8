"""The FastAPI application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy import Engine

from lifeloop import __version__
from lifeloop.accounts.routes import router as accounts_router
from lifeloop.analytics.routes import router as analytics_router
from lifeloop.audience.routes import router as audience_router
from lifeloop.broadcasts.routes import router as broadcasts_router
from lifeloop.config import Settings, get_settings
from lifeloop.engagement.advisors.routes import router as advisors_router
from lifeloop.engagement.coupons.routes import router as coupons_router
from lifeloop.engagement.points import routes as points_routes
from lifeloop.engagement.referrals import routes as referrals_routes
from lifeloop.engagement.tiers.routes import router as tiers_router
from lifeloop.events.routes import router as ingest_router
from lifeloop.journeys.routes import profile_router as profile_journeys_router
from lifeloop.journeys.routes import router as journeys_router
from lifeloop.lifecycle.routes import router as lifecycle_router
from lifeloop.messaging.channels.routes import router as channels_router
from lifeloop.messaging.inbound.routes import router as inbound_router
from lifeloop.messaging.routes import router as messaging_router
from lifeloop.messaging.templates.routes import router as templates_router
from lifeloop.profiles.resolver import BackgroundResolver
from lifeloop.profiles.routes import router as profiles_router
from lifeloop.store.engine import create_store_engine
from lifeloop.web.console import install_console
from lifeloop.web.docs import install_docs
from lifeloop.web.health import router as health_router
from lifeloop.web.problems import install_problem_handlers
from lifeloop.workspaces.routes import router as workspace_router
from lifeloop.workspaces.service import WriteKeyCache


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        resolver = BackgroundResolver(app.state.engine) if settings.resolve_in_server else None
        app.state.resolver = resolver
        if resolver is not None:
            resolver.start()
            resolver.notify()  # events left waiting by a previous run
        try:
            yield
        finally:
            if resolver is not None:
                resolver.stop()

    app = FastAPI(
        lifespan=lifespan,
        title="lifeloop",
        docs_url=None,  # install_docs serves both pages from the package instead of a CDN
        redoc_url=None,
        version=__version__,
        description=(
            "Customer lifecycle platform. `/v1/*` is wire-compatible with the Segment HTTP Tracking API "
            "(write key as HTTP Basic username); `/api/v1/*` takes `Authorization: Bearer <API token>`."
        ),
    )
    app.state.settings = settings
    app.state.engine = engine or create_store_engine(settings)
    app.state.write_keys = WriteKeyCache(settings.write_key_cache_seconds)
    app.state.resolver = None
    app.state.loading = None  # a sentence while a start-up load runs: /health/ready answers 503 with it
    install_problem_handlers(app)
    install_docs(app)
    for router in (health_router, ingest_router, profiles_router, workspace_router, lifecycle_router):
        app.include_router(router)
    app.include_router(inbound_router)
    app.include_router(channels_router)
    app.include_router(templates_router)
    app.include_router(messaging_router)
    app.include_router(analytics_router)
    app.include_router(audience_router)
    app.include_router(journeys_router)
    app.include_router(profile_journeys_router)
    app.include_router(broadcasts_router)
    app.include_router(accounts_router)
    app.include_router(coupons_router)
    app.include_router(advisors_router)
    app.include_router(points_routes.router)
    app.include_router(points_routes.checkins_router)
    app.include_router(tiers_router)
    app.include_router(referrals_routes.router)
    app.include_router(referrals_routes.links_router)
    install_console(app)  # after the API: its error handlers wrap the API's
    return app
