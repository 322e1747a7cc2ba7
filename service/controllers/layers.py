"""Layer profiles (``layers: true``): ``/v1/profiles/{id}/layers`` (JSON or CSV, the module tree
collapsed to a depth) and ``/v1/analysis/layers`` (one model's layers in two runtimes). They are
stored apart from the record, so ``GET /v1/profiles/{id}`` stays as small as it was."""

from __future__ import annotations

import csv
import io
from typing import Annotated, Literal

from litestar import Controller, Response, get
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, QueryParameter
from msgspec import Struct

from dnnprof import layers
from dnnprof.contract import LayerProfile, ProfileRecord
from dnnprof.targets import target_of
from service.deps import Services
from service.errors import error_responses
from service.params import DeviceFilter, RuntimeView

Depth = Annotated[
    int | None,
    QueryParameter(ge=1, le=64, description="collapse the module tree to this depth (1: conv1, layer1 … fc)"),
]
BatchSize = Annotated[
    int | None,
    QueryParameter(
        ge=1, le=1024, description="one of the profile's layers_batch_sizes (default: the smallest)"
    ),
]


def stored_layers(services: Services, record: ProfileRecord, batch_size: int | None) -> LayerProfile:
    """The record's layer profile at ``batch_size`` (default its smallest), or a 404 saying why."""
    asked = record.settings.layers_batch_sizes
    if not asked:
        raise NotFoundException(
            f"profile {record.id} was not asked for layers: POST /v1/profiles with layers: true"
        )
    stored = services.store.layer_profiles(record.id)
    if not stored:
        raise NotFoundException(f"profile {record.id} has no layer profile yet (it is {record.status})")
    chosen = batch_size if batch_size is not None else min(stored)
    if chosen not in stored:
        raise NotFoundException(
            f"profile {record.id} has layer profiles at batch sizes {sorted(stored)}, not {chosen}"
        )
    return stored[chosen]


class LayerComparisonTable(Struct, kw_only=True):
    model: str
    batch_size: int
    depth: int | None
    a_runtime: str
    b_runtime: str
    a_profile: str
    b_profile: str
    a_target: str
    b_target: str
    a_forward_ms_per_image: float
    b_forward_ms_per_image: float
    #: Layers where b saves the most time first, those where it loses the most last.
    layers: list[layers.LayerComparison]


class LayersController(Controller):
    path = "/v1"
    tags = ("layers",)  # type: ignore[assignment]

    @get(
        "/profiles/{profile_id:str}/layers",
        summary="Where the time of one batch size went, layer by layer",
        description="The layer profile of a profile asked for with layers: true, from a separate "
        "profiled pass in its runtime's own profiler: each module's time per image, its share of the "
        "profiled forward, its FLOPs, parameters and achieved FLOP/s, the runtime's node names, the "
        "unattributed time apart, op-type time shares beside FLOP shares. depth collapses the tree; "
        "format=csv gives one row per layer.",
        sync_to_thread=True,
        responses=error_responses(400, 404),
    )
    def profile_layers(
        self,
        profile_id: FromPath[str],
        services: NamedDependency[Services],
        batch_size: BatchSize = None,
        depth: Depth = None,
        format: Annotated[Literal["json", "csv"], QueryParameter(description="json or csv")] = "json",
    ) -> Response:
        record = services.store.get(profile_id)
        if record is None:
            raise NotFoundException(f"no profile with id {profile_id!r}")
        profile = layers.collapse(stored_layers(services, record, batch_size), depth)
        if format == "json":
            return Response(profile)
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(layers.CSV_COLUMNS)
        writer.writerows(layers.csv_rows(profile))
        name = f"{profile_id}-layers-bs{profile.batch_size}.csv"
        return Response(
            out.getvalue(),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    @get(
        "/analysis/layers",
        summary="One model's layers in two runtimes: which gain and which lose",
        description="The newest succeeded profile with layers of the model in each runtime (on "
        "device, where given), at batch_size (default: the smallest both have), side by side per "
        "layer with b over a; the layers where b saves the most time first.",
        sync_to_thread=True,
        responses=error_responses(400, 404),
    )
    def compare_layers(
        self,
        services: NamedDependency[Services],
        model: Annotated[str, QueryParameter(max_length=120)],
        a_runtime: RuntimeView = "eager",
        b_runtime: RuntimeView = "eager",
        device: DeviceFilter = None,
        batch_size: BatchSize = None,
        depth: Depth = None,
    ) -> LayerComparisonTable:
        qualified = services.try_resolve(model)
        a_record, a_all = self._newest_with_layers(services, qualified, a_runtime, device)
        b_record, b_all = self._newest_with_layers(services, qualified, b_runtime, device, not_id=a_record.id)
        common = sorted(set(a_all) & set(b_all))
        if batch_size is None and not common:
            raise NotFoundException(f"the {a_runtime} and {b_runtime} layer profiles share no batch size")
        chosen = batch_size if batch_size is not None else common[0]
        if chosen not in a_all or chosen not in b_all:
            raise NotFoundException(
                f"no layer profile at batch size {chosen} in both runtimes (both: {common})"
            )
        a, b = layers.collapse(a_all[chosen], depth), layers.collapse(b_all[chosen], depth)
        return LayerComparisonTable(
            model=qualified,
            batch_size=chosen,
            depth=depth,
            a_runtime=a_runtime,
            b_runtime=b_runtime,
            a_profile=a_record.id,
            b_profile=b_record.id,
            a_target=target_of(a_record),
            b_target=target_of(b_record),
            a_forward_ms_per_image=a.forward_ms_per_image,
            b_forward_ms_per_image=b.forward_ms_per_image,
            layers=layers.gains_first(layers.compare(a, b)),
        )

    @staticmethod
    def _newest_with_layers(
        services: Services, model: str, runtime: str, device: str | None, not_id: str | None = None
    ) -> tuple[ProfileRecord, dict[int, LayerProfile]]:
        for record in services.store.list(model=model, device=device, status="succeeded", runtime=runtime):
            if record.settings.layers_batch_sizes and record.id != not_id:
                stored = services.store.layer_profiles(record.id)
                if stored:
                    return record, stored
        where = f" on {device}" if device else ""
        raise NotFoundException(
            f"no succeeded profile of {model} in the {runtime} runtime{where} has layers: "
            "POST /v1/profiles with layers: true"
        )
