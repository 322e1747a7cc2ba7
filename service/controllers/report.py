"""``/`` and ``/static``: the interactive report (HTML, JS and CSS shipped with the service)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from litestar import Controller, Response, get
from litestar.static_files import create_static_files_router

REPORT_DIR = Path(__file__).resolve().parents[1] / "report"

static_router = create_static_files_router(path="/static", directories=[REPORT_DIR], include_in_schema=False)


def plotly_js_dir() -> Path:
    """Plotly.js as the ``plotly`` Python package ships it (found without importing plotly)."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the plotly package is missing: pip install plotly")
    return Path(next(iter(spec.submodule_search_locations))) / "package_data"


#: The report's charting library, served by the service itself: the report works offline.
vendor_router = create_static_files_router(
    path="/vendor", directories=[plotly_js_dir()], include_in_schema=False
)


class ReportController(Controller):
    tags = ("report",)  # type: ignore[assignment]

    @get(["/", "/report"], summary="The interactive report", include_in_schema=False, sync_to_thread=False)
    def report(self) -> Response[bytes]:
        return Response((REPORT_DIR / "index.html").read_bytes(), media_type="text/html; charset=utf-8")
