"""``/`` and ``/static``: the interactive report (HTML, JS and CSS shipped with the service)."""

from __future__ import annotations

from pathlib import Path

from litestar import Controller, Response, get
from litestar.static_files import create_static_files_router

REPORT_DIR = Path(__file__).resolve().parents[1] / "report"

static_router = create_static_files_router(path="/static", directories=[REPORT_DIR], include_in_schema=False)


class ReportController(Controller):
    tags = ("report",)  # type: ignore[assignment]

    @get(["/", "/report"], summary="The interactive report", include_in_schema=False, sync_to_thread=False)
    def report(self) -> Response[bytes]:
        return Response((REPORT_DIR / "index.html").read_bytes(), media_type="text/html; charset=utf-8")
