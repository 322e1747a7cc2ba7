"""``/v1/results/published``: accuracy tables published elsewhere (e.g. timm's results CSVs),
imported so the analyses have accuracy for models not measured here. Kept apart from measured
profiles and labelled with their source."""

from __future__ import annotations

import re
from typing import Annotated

from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException, PermissionDeniedException, ValidationException
from litestar.params import FromPath, QueryParameter, RawBody
from msgspec import Struct

from dnnprof.analysis import is_published_of
from dnnprof.contract import PublishedResult
from dnnprof.published import (
    MAX_IMPORT_ROWS,
    SHIPPED_TABLES,
    is_shipped,
    lookalike_of_shipped,
    parse_results_csv,
    resolve_rows,
)
from dnnprof.store import now
from service.bodies import csv_body
from service.deps import CatalogueNotReadyError, Services
from service.errors import error_responses
from service.params import next_page_link

MAX_CSV_BYTES = 8 * 1024 * 1024
#: Imported sources kept at once (the shipped tables not counted): with MAX_IMPORT_ROWS each, what
#: the imports may hold in Redis and what a listing may read stay bounded.
MAX_IMPORTED_SOURCES = 20
MAX_LISTED = (MAX_IMPORTED_SOURCES + 4) * MAX_IMPORT_ROWS
SOURCE_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}"  # whole name (fullmatch: no trailing newline)


def writable_source(source: str) -> None:
    """A source name an API client may import into or delete: well formed, and not one of the
    tables shipped with dnnprof (anyone who may POST could otherwise replace the paper's figures)."""
    if not re.fullmatch(SOURCE_PATTERN, source):
        raise ValidationException("source: 1-64 letters, digits, '.', '_' or '-'")
    if is_shipped(source):
        shipped = ", ".join(t.source for t in SHIPPED_TABLES)
        raise PermissionDeniedException(
            f"{source!r} is a table shipped with dnnprof ({shipped}): read-only here, renewed only by "
            "`python -m dnnprof.published --refresh` or a new release; import under another source name"
        )


class ImportSummary(Struct, kw_only=True):
    source: str
    imported: int
    resolved: int
    unresolved: list[str]


class PublishedResultsController(Controller):
    path = "/v1/results/published"
    tags = ("results",)  # type: ignore[assignment]

    @post(
        "/{source:str}",
        summary="Import a published accuracy table (CSV, timm's results shape) under a source label",
        request_max_body_size=MAX_CSV_BYTES,
        sync_to_thread=True,
        before_request=csv_body,
        responses=error_responses(400, 401, 403, 413, 415, 422, 429, 503),
    )
    def import_csv(
        self, source: FromPath[str], body: RawBody, services: NamedDependency[Services]
    ) -> ImportSummary:
        writable_source(source)
        if (shipped := lookalike_of_shipped(source)) is not None:
            raise ValidationException(
                f"source: {source!r} would pass for the table shipped with dnnprof {shipped!r} (the same "
                "but for case or a trailing '.', '_' or '-'): import under a name of its own"
            )
        imported = {s for s in services.store.published_sources() if not is_shipped(s)}
        if source not in imported and len(imported) >= MAX_IMPORTED_SOURCES:
            raise ValidationException(
                f"source: at most {MAX_IMPORTED_SOURCES} imported sources are kept (of "
                f"{MAX_IMPORT_ROWS} rows each); delete one (DELETE /v1/results/published/{{source}}) "
                "or import into an existing one, which replaces it"
            )
        text = body.decode("utf-8-sig")  # checked by csv_body: UTF-8 sent as text/csv
        try:
            results = parse_results_csv(text, source, imported_at=now())
        except ValueError as exc:
            raise ValidationException(str(exc)) from exc
        try:
            catalogue = services.catalogue()
        except CatalogueNotReadyError:
            catalogue = None
        if catalogue is None:
            unresolved = [r.model for r in results]
        else:
            unresolved = resolve_rows(results, lambda name: catalogue.resolve(name, suggest=False).qualified)
        services.store.import_published(source, results)
        return ImportSummary(
            source=source,
            imported=len(results),
            resolved=len(results) - len(unresolved),
            unresolved=unresolved[:50],
        )

    @get(
        "/",
        summary="Imported published results, labelled with their source",
        description="By source, then model. Page with `limit` and `offset`; a full page carries a "
        '`Link: <...>; rel="next"` header to the next one.',
        sync_to_thread=True,
    )
    def list_published(
        self,
        request: Request,
        services: NamedDependency[Services],
        model: Annotated[str | None, QueryParameter(max_length=200)] = None,
        source: Annotated[str | None, QueryParameter(max_length=64)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_IMPORT_ROWS)] = MAX_IMPORT_ROWS,
        offset: Annotated[int, QueryParameter(ge=0, le=MAX_LISTED)] = 0,
    ) -> Response[list[PublishedResult]]:
        results = services.store.published(source)
        if model:
            qualified = services.try_resolve(model)
            results = [r for r in results if r.model == model or is_published_of(r, qualified)]
        results.sort(key=lambda r: (r.source, r.model))
        page = results[offset : offset + limit]
        more = len(page) == limit and offset + limit < len(results)
        headers = next_page_link(request, ("offset",), offset=str(offset + limit)) if more else {}
        return Response(page, headers=headers)

    @delete(
        "/{source:str}",
        summary="Forget one imported source (not a shipped table)",
        sync_to_thread=True,
        responses=error_responses(401, 403, 404, 422, 429, 503),
    )
    def forget(self, source: FromPath[str], services: NamedDependency[Services]) -> None:
        writable_source(source)
        if not services.store.delete_published(source):
            raise NotFoundException(f"no imported source {source!r}")
