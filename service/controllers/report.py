"""``/`` and ``/static``: the interactive report (HTML, JS and CSS shipped with the service)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from litestar import Controller, Request, Response, get
from litestar.datastructures import ResponseHeader
from litestar.exceptions import NotFoundException
from litestar.static_files import create_static_files_router

REPORT_DIR = Path(__file__).resolve().parents[1] / "report"

#: The report loads only its own files and calls only this API; Plotly.js injects <style> tags.
REPORT_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
REPORT_HEADERS = [
    ResponseHeader(name="Content-Security-Policy", value=REPORT_CSP),
    ResponseHeader(name="X-Content-Type-Options", value="nosniff"),
]


#: The longest file name (bytes) Linux filesystems take (NAME_MAX), and the longest path (PATH_MAX).
NAME_MAX, PATH_MAX = 255, 4096


def refuse_nul(request: Request) -> None:
    """No file can have such a name: a 404, not the 500 that os.stat's ValueError (a NUL byte) or
    OSError ENAMETOOLONG (a name past NAME_MAX) became."""
    path = request.url.path
    if "\x00" in path:
        raise NotFoundException("no such file: a path cannot contain a NUL byte")
    if len(path.encode()) > PATH_MAX or any(len(part.encode()) > NAME_MAX for part in path.split("/")):
        raise NotFoundException(f"no such file: a file name is at most {NAME_MAX} bytes")


static_router = create_static_files_router(
    path="/static", directories=[REPORT_DIR], include_in_schema=False, before_request=refuse_nul
)


def plotly_js_dir() -> Path:
    """Plotly.js as the ``plotly`` Python package ships it (found without importing plotly)."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the plotly package is missing: pip install plotly")
    return Path(next(iter(spec.submodule_search_locations))) / "package_data"


#: The report's charting library, served by the service itself: the report works offline.
vendor_router = create_static_files_router(
    path="/vendor", directories=[plotly_js_dir()], include_in_schema=False, before_request=refuse_nul
)


class ReportController(Controller):
    tags = ("report",)  # type: ignore[assignment]
    response_headers = REPORT_HEADERS

    @get(["/", "/report"], summary="The interactive report", include_in_schema=False, sync_to_thread=False)
    def report(self) -> Response[bytes]:
        return Response((REPORT_DIR / "index.html").read_bytes(), media_type="text/html")
