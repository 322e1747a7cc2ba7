"""``/schema``: the API's documentation, rendered by Swagger UI from files this service serves
(the ``swagger-ui-py`` package ships Swagger UI's own build), so it works offline and in an
air-gapped lab. Litestar's default pages fetch their scripts, and a favicon, from a CDN."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import yaml
from litestar import Request, Response, Router
from litestar.openapi.plugins import SwaggerRenderPlugin, YamlRenderPlugin
from litestar.static_files import create_static_files_router

from service.controllers.report import refuse_nul

ASSETS = "/static/swagger"


def swagger_assets() -> Path:
    """Swagger UI's files inside the installed package (found without importing it: its
    ``__init__`` loads adapters for other web frameworks)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package is missing: pip install swagger-ui-py")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


swagger_router = create_static_files_router(
    path=ASSETS, directories=[swagger_assets()], include_in_schema=False, before_request=refuse_nul
)


class SafeYamlRenderPlugin(YamlRenderPlugin):
    """/schema/openapi.yaml as plain YAML. Litestar's plugin uses ``yaml.dump``, which writes a
    tuple default as ``!!python/tuple``: no YAML loader but PyYAML's unsafe one reads that. The
    JSON document, loaded back, holds only JSON's types."""

    def render(self, request: Request, openapi_schema: dict[str, Any]) -> bytes:
        plain = json.loads(self.render_json(request, openapi_schema))
        return yaml.safe_dump(plain, sort_keys=False, allow_unicode=True).encode("utf-8")


#: /schema's policy: the page's own files and its inline scripts by their hashes (script-src),
#: inline styles (Swagger UI sets them), nothing from elsewhere.
SCHEMA_CSP = (
    "default-src 'self'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
INLINE_SCRIPT = re.compile(rb"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", re.S)


async def schema_headers(response: Response) -> Response:
    """``nosniff`` on every /schema response, and a Content-Security-Policy on its HTML that
    allows the inline scripts it holds by their SHA-256 (CSP Level 2), nothing else inline."""
    response.headers["X-Content-Type-Options"] = "nosniff"
    body = response.content
    if str(response.media_type).startswith("text/html") and isinstance(body, bytes):
        hashes = " ".join(
            f"'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
            for script in INLINE_SCRIPT.findall(body)
            if script
        )
        response.headers["Content-Security-Policy"] = SCHEMA_CSP.format(hashes=hashes)
    return response


class HeadedSwaggerRenderPlugin(SwaggerRenderPlugin):
    """Litestar's Swagger UI page, with :func:`schema_headers` on the /schema routes."""

    def receive_router(self, router: Router) -> None:
        super().receive_router(router)
        router.after_request = schema_headers  # type: ignore[assignment]


render_plugins = [
    SafeYamlRenderPlugin(),  # /schema/openapi.yaml (and .yml); a custom plugin list has none unless named
    HeadedSwaggerRenderPlugin(
        path="/",  # /schema itself
        js_url=f"{ASSETS}/swagger-ui-bundle.js",
        css_url=f"{ASSETS}/swagger-ui.css",
        standalone_preset_js_url=f"{ASSETS}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{ASSETS}/favicon-32x32.png'>",
    ),
]
