"""``/docs`` without the network: Swagger UI from the `swagger-ui-bundle` package's assets.

FastAPI's own ``/docs`` page loads Swagger UI from a CDN, so it is blank on an offline
site; here the same page loads the JS, CSS and icon the package bundles, served under
``/docs-assets/``. ReDoc (CDN-only) is not served.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs-assets"


def assets_dir() -> Path:
    import swagger_ui_bundle

    return Path(swagger_ui_bundle.swagger_ui_path)


def mount(app: FastAPI) -> None:
    """Serve ``/docs`` (and its OAuth2 redirect page) with local Swagger UI assets."""
    app.mount(ASSETS, StaticFiles(directory=assets_dir()), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} — docs",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
            oauth2_redirect_url="/docs/oauth2-redirect")

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    def redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
