"""``/schema``: the API's documentation, rendered by Swagger UI from files this service serves
(the ``swagger-ui-py`` package ships Swagger UI's own build), so it works offline and in an
air-gapped lab. Litestar's default pages fetch their scripts, and a favicon, from a CDN."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import yaml
from litestar import Request
from litestar.openapi.plugins import SwaggerRenderPlugin, YamlRenderPlugin
from litestar.static_files import create_static_files_router

ASSETS = "/static/swagger"


def swagger_assets() -> Path:
    """Swagger UI's files inside the installed package (found without importing it: its
    ``__init__`` loads adapters for other web frameworks)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package is missing: pip install swagger-ui-py")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


swagger_router = create_static_files_router(
    path=ASSETS, directories=[swagger_assets()], include_in_schema=False
)


class SafeYamlRenderPlugin(YamlRenderPlugin):
    """/schema/openapi.yaml as plain YAML. Litestar's plugin uses ``yaml.dump``, which writes a
    tuple default as ``!!python/tuple``: no YAML loader but PyYAML's unsafe one reads that. The
    JSON document, loaded back, holds only JSON's types."""

    def render(self, request: Request, openapi_schema: dict[str, Any]) -> bytes:
        plain = json.loads(self.render_json(request, openapi_schema))
        return yaml.safe_dump(plain, sort_keys=False, allow_unicode=True).encode("utf-8")


render_plugins = [
    SafeYamlRenderPlugin(),  # /schema/openapi.yaml (and .yml); a custom plugin list has none unless named
    SwaggerRenderPlugin(
        path="/",  # /schema itself
        js_url=f"{ASSETS}/swagger-ui-bundle.js",
        css_url=f"{ASSETS}/swagger-ui.css",
        standalone_preset_js_url=f"{ASSETS}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{ASSETS}/favicon-32x32.png'>",
    ),
]
