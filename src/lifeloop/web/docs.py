"""Swagger UI (/docs) and ReDoc (/redoc) from assets shipped in the package.

FastAPI's own pages load their JavaScript, CSS, favicon and fonts from CDNs, so they are blank on a
machine without internet; these load everything from ``/static``. The vendored versions are listed in
``static/vendor/README.md``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"
STATIC_URL = "/static"


def install_docs(app: FastAPI) -> None:
    """Mount the static assets and serve the two documentation pages (create the app with
    ``docs_url=None, redoc_url=None`` so FastAPI's CDN-backed pages are not registered too)."""
    app.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/docs", include_in_schema=False)
    def swagger_ui(request: Request) -> HTMLResponse:
        static = _root(request) + STATIC_URL
        return get_swagger_ui_html(
            openapi_url=_root(request) + str(app.openapi_url),
            title=f"{app.title} · API docs",
            swagger_js_url=f"{static}/vendor/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url=f"{static}/vendor/swagger-ui/swagger-ui.css",
            swagger_favicon_url=f"{static}/favicon.svg",
            # Never hand the schema's URL to validator.swagger.io.
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get("/redoc", include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        static = _root(request) + STATIC_URL
        return get_redoc_html(
            openapi_url=_root(request) + str(app.openapi_url),
            title=f"{app.title} · API reference",
            redoc_js_url=f"{static}/vendor/redoc/redoc.standalone.js",
            redoc_favicon_url=f"{static}/favicon.svg",
            with_google_fonts=False,
        )


def _root(request: Request) -> str:
    """The prefix a reverse proxy serves the app under (``--root-path``), as FastAPI's own pages use."""
    return str(request.scope.get("root_path", "")).rstrip("/")
