"""``/v1/results/published``: accuracy tables published elsewhere (e.g. timm's results CSVs),
imported so the analyses have accuracy for models not measured here. Kept apart from measured
profiles and labelled with their source."""

from __future__ import annotations

import re
from typing import Annotated

from litestar import Controller, delete, get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException, PermissionDeniedException, ValidationException
from litestar.params import FromPath, QueryParameter, RawBody
from msgspec import Struct

from dnnprof.analysis import is_published_of
from dnnprof.contract import PublishedResult
from dnnprof.published import SHIPPED_TABLES, is_shipped, parse_results_csv, resolve_rows
from dnnprof.store import now
from service.bodies import csv_body
from service.deps import CatalogueNotReadyError, Services
from service.errors import error_responses

MAX_CSV_BYTES = 8 * 1024 * 1024
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
            unresolved = resolve_rows(results, lambda name: catalogue.resolve(name).qualified)
        services.store.import_published(source, results)
        return ImportSummary(
            source=source,
            imported=len(results),
            resolved=len(results) - len(unresolved),
            unresolved=unresolved[:50],
        )

    @get("/", summary="Imported published results, labelled with their source", sync_to_thread=True)
    def list_published(
        self,
        services: NamedDependency[Services],
        model: Annotated[str | None, QueryParameter(max_length=200)] = None,
        source: Annotated[str | None, QueryParameter(max_length=64)] = None,
    ) -> list[PublishedResult]:
        results = services.store.published(source)
        if model:
            qualified = services.try_resolve(model)
            results = [r for r in results if r.model == model or is_published_of(r, qualified)]
        return results

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
