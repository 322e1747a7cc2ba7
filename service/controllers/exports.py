"""``/v1/export.csv`` and ``/v1/export.json``: stored profiles written as they are read from the
store (a few hundred at a time), so an export of a million profiles starts at once and holds
constant memory. Same filters as the listing."""

from __future__ import annotations

import csv
import importlib.util
import io
from collections.abc import Iterator
from typing import Annotated

import msgspec
from litestar import Controller, Response, get
from litestar.di import NamedDependency, Provide
from litestar.exceptions import NotFoundException
from litestar.params import QueryParameter
from litestar.response import Stream

from dnnprof.contract import JobStatus, ProfileRecord
from dnnprof.targets import target_of
from service.deps import Services
from service.errors import error_responses
from service.params import DeviceFilter, ModelFilter
from service.reads import ProfileQuery, ProfileReads

ROWS_PER_CHUNK = 500

CSV_COLUMNS = (
    "profile_id",
    "model",
    "paper_name",
    "device",
    "target",
    "device_name",
    "precision",
    "input_size",
    "params",
    "param_file_bytes_fp32",
    "flops",
    "top1",
    "top5",
    "batch_size",
    "status",
    "ms_per_image_mean",
    "ms_per_image_median",
    "ms_per_image_std",
    "images_per_s",
    "ci95_low_ms",
    "ci95_high_ms",
    "cv",
    "noisy",
    "p90_ms",
    "p99_ms",
    "runs",
    "repeats",
    "memory_bytes",
    "memory_method",
    "memory_floor_bytes",
    "flops_method",
    "runtime",
    "first_call_s",
    "runtime_prepare_s",
    "outputs_match",
)


def _blank(value) -> str:
    return "" if value is None else str(value)


def csv_rows(rec: ProfileRecord) -> Iterator[list[str]]:
    """One row per batch size of a profile with a result."""
    r = rec.result
    if r is None:
        return
    for b in r.batches:
        lat, mem = b.latency, b.memory
        yield [
            rec.id,
            rec.settings.model,
            rec.model.paper_name or "",
            rec.settings.device,
            target_of(rec),
            r.fingerprint.device_name,
            rec.settings.precision,
            str(r.input_size),
            str(r.params),
            str(r.param_file_bytes_fp32),
            _blank(r.flops),
            _blank(r.top1),
            _blank(r.top5),
            str(b.batch_size),
            b.status,
            _blank(lat and lat.mean_ms),
            _blank(lat and lat.median_ms),
            _blank(lat and lat.std_ms),
            _blank(lat and lat.images_per_s),
            _blank(lat and lat.ci95_low_ms),
            _blank(lat and lat.ci95_high_ms),
            _blank(lat and lat.cv),
            _blank(lat and lat.noisy),
            _blank(lat and lat.p90_ms),
            _blank(lat and lat.p99_ms),
            _blank(lat and lat.runs),
            _blank(lat and lat.processes),
            _blank(mem and mem.total_bytes),
            mem.method if mem else "",
            _blank(r.memory_floor_bytes),
            _blank(r.flops_method),
            rec.settings.runtime,
            _blank(b.first_call_s),
            _blank(r.runtime and r.runtime.prepare_s),
            _blank(r.runtime and r.runtime.outputs and r.runtime.outputs.outputs_match),
        ]


def csv_chunks(records: Iterator[ProfileRecord]) -> Iterator[str]:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    yield out.getvalue()  # the header at once: the first byte does not wait for the store
    out.seek(0)
    out.truncate()
    rows = 0
    for rec in records:
        for row in csv_rows(rec):
            writer.writerow(row)
            rows += 1
        if rows >= ROWS_PER_CHUNK:
            yield out.getvalue()
            out.seek(0)
            out.truncate()
            rows = 0
    yield out.getvalue()


def json_chunks(records: Iterator[ProfileRecord]) -> Iterator[bytes]:
    """A JSON array, one record at a time."""
    yield b"["
    first = True
    for rec in records:
        yield (b"" if first else b",") + msgspec.json.encode(rec)
        first = False
    yield b"]"


def parquet_bytes(records: Iterator[ProfileRecord]) -> bytes:
    """The CSV's rows as a Parquet table (typed columns), where pyarrow is installed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    numeric = set(CSV_COLUMNS) - {
        "profile_id", "model", "paper_name", "device", "target", "device_name", "precision",
        "status", "memory_method", "flops_method", "noisy", "runtime", "outputs_match",
    }  # fmt: skip
    columns: dict[str, list] = {c: [] for c in CSV_COLUMNS}
    for rec in records:
        for row in csv_rows(rec):
            for name, value in zip(CSV_COLUMNS, row, strict=True):
                if name in numeric:
                    columns[name].append(float(value) if value != "" else None)
                elif name in ("noisy", "outputs_match"):
                    columns[name].append(None if value == "" else value == "True")
                else:
                    columns[name].append(value or None)
    kinds = {"noisy": pa.bool_(), "outputs_match": pa.bool_()} | {c: pa.float64() for c in numeric}
    schema = pa.schema([(c, kinds.get(c, pa.string())) for c in CSV_COLUMNS])
    out = io.BytesIO()
    pq.write_table(pa.table(columns, schema=schema), out)
    return out.getvalue()


PARQUET = "application/vnd.apache.parquet"


def attachment(extension: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="dnnprof-profiles.{extension}"'}


def has_pyarrow() -> bool:
    return importlib.util.find_spec("pyarrow") is not None


def every_profile(
    services: NamedDependency[Services],
    model: ModelFilter = None,
    device: DeviceFilter = None,
    status: Annotated[JobStatus | None, QueryParameter()] = None,
) -> Iterator[ProfileRecord]:
    """The JSON export's selection: every stored profile unless filtered, as the listing."""
    return ProfileReads(services).every(ProfileQuery(model, device, status))


def measured_profiles(
    services: NamedDependency[Services],
    model: ModelFilter = None,
    device: DeviceFilter = None,
    status: Annotated[JobStatus, QueryParameter()] = "succeeded",
) -> Iterator[ProfileRecord]:
    """The cell exports' selection (CSV, Parquet): succeeded profiles unless ``status`` says
    otherwise, filtered as the listing."""
    return ProfileReads(services).every(ProfileQuery(model, device, status))


Records = NamedDependency[Iterator[ProfileRecord]]


class ExportController(Controller):
    path = "/v1"
    tags = ("export",)  # type: ignore[assignment]

    @get(
        "/export.json",
        summary="Stored profiles, as a JSON array, streamed",
        description="Filters as `GET /v1/profiles`; every profile without them.",
        media_type="application/json",
        sync_to_thread=True,
        dependencies={"records": Provide(every_profile, sync_to_thread=True)},
    )
    def export_json(self, records: Records) -> Stream:
        return Stream(json_chunks(records), media_type="application/json", headers=attachment("json"))

    @get(
        "/export.csv",
        summary="Every measured cell (profile x batch size), as CSV, streamed",
        description="Succeeded profiles unless `status` says otherwise; filters as `GET /v1/profiles`.",
        media_type="text/csv",
        sync_to_thread=True,
        dependencies={"records": Provide(measured_profiles, sync_to_thread=True)},
    )
    def export_csv(self, records: Records) -> Stream:
        return Stream(csv_chunks(records), media_type="text/csv", headers=attachment("csv"))

    @get(
        "/export.parquet",
        summary="Every measured cell (profile x batch size), as Parquet (where pyarrow is installed)",
        description="The CSV's columns, typed. 404 saying so where the API has no pyarrow.",
        media_type=PARQUET,
        sync_to_thread=True,
        responses=error_responses(404),
        dependencies={"records": Provide(measured_profiles, sync_to_thread=True)},
    )
    def export_parquet(self, records: Records) -> Response[bytes]:
        if not has_pyarrow():
            raise NotFoundException(
                "Parquet needs pyarrow on the API (pip install pyarrow); CSV and JSON need nothing"
            )
        return Response(parquet_bytes(records), media_type=PARQUET, headers=attachment("parquet"))
