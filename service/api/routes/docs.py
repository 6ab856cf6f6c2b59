"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) with their scripts, stylesheet and icon
served by the service itself, so the pages work on a machine with no internet access and
the browser fetches nothing from a CDN. FastAPI's own pages load them from jsDelivr.

The assets come from the ``fastapi-offline`` wheel (Swagger UI 5, which renders the
OpenAPI 3.1 documents FastAPI writes, and ReDoc 2); the pages are FastAPI's, pointed at
them. The app is built with ``docs_url=None, redoc_url=None`` and calls
:func:`install_docs`; the API keys guard these paths as they guard every other one.

ReDoc's side menu still shows Redocly's logo from cdn.redoc.ly; the pages' Content Security
Policy lets the browser load nothing from any other origin than the service's, so that
image is not requested (ReDoc then leaves it out).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
ASSETS_URL = "/docs/assets"
ASSETS = Path(str(files("fastapi_offline") / "static"))
"""swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js and favicon.png."""
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self' 'unsafe-inline'",  # FastAPI's pages start the UI inline
        "style-src 'self' 'unsafe-inline'",  # ReDoc writes its styles into the page
        "img-src 'self' data:",  # Swagger UI's icons are data: URLs
        "worker-src 'self' blob:",  # ReDoc's search index runs in a worker built from a blob
    )
)
"""Nothing from another origin: no script, stylesheet, font, image, nor request."""


def _root(request: Request) -> str:
    """The path prefix a proxy serves the app under (``--root-path``), as FastAPI's own
    pages use it: the browser resolves the assets' and the schema's URLs against it."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def _own_assets_only(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return page


def install_docs(app: FastAPI) -> None:
    """Mount the assets and add the two pages (and Swagger UI's OAuth2 redirect page,
    which FastAPI's default /docs has too) to ``app``, out of the OpenAPI schema."""
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS), name="docs-assets")

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = _root(request)
        page = get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{root}{OAUTH2_REDIRECT_URL}",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            swagger_ui_parameters=app.swagger_ui_parameters,
        )
        return _own_assets_only(page)

    @app.get(OAUTH2_REDIRECT_URL, include_in_schema=False)
    async def swagger_ui_oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = _root(request)
        page = get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            with_google_fonts=False,  # a stylesheet from fonts.googleapis.com
        )
        return _own_assets_only(page)
