"""``/v1/results/published``: accuracy tables published elsewhere (e.g. timm's results CSVs),
imported so the analyses have accuracy for models not measured here. Kept apart from measured
profiles and labelled with their source."""

from __future__ import annotations

import csv
import io
import re
from typing import Annotated

from litestar import Controller, delete, get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException, ValidationException
from litestar.params import FromPath, QueryParameter, RawBody
from msgspec import Struct

from dnnprof.analysis import is_published_of
from dnnprof.catalogue import UnknownModelError
from dnnprof.contract import PublishedResult
from dnnprof.store import now
from service.bodies import csv_body
from service.deps import CatalogueNotReadyError, Services
from service.errors import error_responses

MAX_CSV_BYTES = 8 * 1024 * 1024
SOURCE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"


class ImportSummary(Struct, kw_only=True):
    source: str
    imported: int
    resolved: int
    unresolved: list[str]


def _float(row: dict[str, str], key: str) -> float | None:
    value = (row.get(key) or "").strip().replace(",", "")  # timm writes "1,014.45"
    return float(value) if value else None


def parse_results_csv(text: str, source: str) -> list[PublishedResult]:
    """Rows in the shape of timm's results tables: model, top1, top5, img_size, param_count, ...
    Raises ValidationException naming the line that is wrong."""
    reader = csv.DictReader(io.StringIO(text))
    columns = set(reader.fieldnames or [])
    if not {"model", "top1"} <= columns:
        raise ValidationException(
            "the CSV needs a header with at least 'model' and 'top1' "
            f"(timm's results table shape: model,img_size,top1,top5,param_count,...); got {sorted(columns)}"
        )
    out = []
    for line, row in enumerate(reader, start=2):
        try:
            model = (row.get("model") or "").strip()
            top1 = _float(row, "top1")
            if not model or top1 is None or not 0 <= top1 <= 100:
                raise ValueError("needs a model name and a top1 in 0..100")
            top5 = _float(row, "top5")
            if top5 is not None and not 0 <= top5 <= 100:
                raise ValueError("top5 must be in 0..100")
            size = _float(row, "img_size")
            out.append(
                PublishedResult(
                    model=model[:200],
                    resolved=None,
                    source=source,
                    top1=top1,
                    top5=top5,
                    img_size=int(size) if size is not None else None,
                    param_count_m=_float(row, "param_count"),
                    crop_pct=_float(row, "crop_pct"),
                    interpolation=(row.get("interpolation") or None),
                    imported_at=now(),
                )
            )
        except ValueError as exc:
            raise ValidationException(f"line {line}: {exc}") from exc
    return out


class PublishedResultsController(Controller):
    path = "/v1/results/published"
    tags = ("results",)  # type: ignore[assignment]

    @post(
        "/{source:str}",
        summary="Import a published accuracy table (CSV, timm's results shape) under a source label",
        request_max_body_size=MAX_CSV_BYTES,
        sync_to_thread=True,
        before_request=csv_body,
        responses=error_responses(400, 401, 413, 415, 422, 429, 503),
    )
    def import_csv(
        self, source: FromPath[str], body: RawBody, services: NamedDependency[Services]
    ) -> ImportSummary:
        if not re.match(SOURCE_PATTERN, source):
            raise ValidationException("source: 1-64 letters, digits, '.', '_' or '-'")
        text = body.decode("utf-8-sig")  # checked by csv_body: UTF-8 sent as text/csv
        results = parse_results_csv(text, source)
        try:
            catalogue = services.catalogue()
        except CatalogueNotReadyError:
            catalogue = None
        unresolved = []
        for result in results:
            try:
                if catalogue is None:
                    raise UnknownModelError(result.model, [])
                result.resolved = catalogue.resolve(result.model).qualified
            except UnknownModelError:
                unresolved.append(result.model)
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

    @delete("/{source:str}", summary="Forget one imported source", sync_to_thread=True)
    def forget(self, source: FromPath[str], services: NamedDependency[Services]) -> None:
        if not services.store.delete_published(source):
            raise NotFoundException(f"no imported source {source!r}")
