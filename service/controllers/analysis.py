"""``/v1/analysis/*`` and ``/v1/figures/*``: the paper's tables and figures over what the service
has measured and imported (the exports are in :mod:`service.controllers.exports`)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Annotated, Literal

from litestar import Controller, Response, get
from litestar.di import NamedDependency, Provide
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, QueryParameter
from msgspec import Struct

from dnnprof import analysis, paper_devices
from dnnprof.runtimes import RUNTIME_NAMES
from dnnprof.targets import class_of
from service.deps import Services
from service.errors import error_responses
from service.params import DeviceSide, PrecisionFilter, RuntimeView, Selection, ViewDevice, ViewSide
from service.reads import AnalysisReads, RowQuery

BatchQuery = Annotated[int, QueryParameter(ge=1, le=1024)]


class ModelIdentity(Struct, kw_only=True):
    """The columns every per-model table starts with (Table 1 and Table 2 alike)."""

    model: str
    paper_name: str | None
    device: str
    target: str
    device_name: str
    precision: str


class Table1Row(ModelIdentity, kw_only=True):
    ms_per_image: dict[int, float | None]
    images_per_s: dict[int, float | None]
    oom: list[int]


class Table2Row(ModelIdentity, kw_only=True):
    param_file_mb: float
    memory_mb: dict[int, float | None]
    oom: list[int]


class Table3(Struct, kw_only=True):
    device: str
    target: str
    batch_size: int
    #: What the target's processes held before any model (the median over its profiles), in MB:
    #: part of every "total" figure, left out of every "model" one.
    memory_floor_mb: float | None
    cells: list[analysis.ConstrainedBest]


def _floor(rows: list[analysis.ModelRow]) -> float | None:
    floors = [r.memory_floor_mb for r in rows if r.memory_floor_mb is not None]
    return statistics.median(floors) if floors else None


def _identity(row: analysis.ModelRow) -> dict:
    """A row's :class:`ModelIdentity` columns, to start a table's row with."""
    return {name: getattr(row, name) for name in ModelIdentity.__struct_fields__}


def _targets(rows, device: str | None) -> list[str]:
    """The groups of a per-device analysis: each target in the rows (a class asked for gives each
    of its targets apart); where nothing is stored, the one device asked for, empty."""
    targets = sorted({r.target for r in rows})
    return targets or ([device] if device else [])


@dataclass
class View:
    """The rows an analysis reads, with the query's device, precision and selection applied."""

    rows: list[analysis.ModelRow]
    device: str | None

    def targets(self) -> list[str]:
        return _targets(self.rows, self.device)

    def on(self, target: str) -> list[analysis.ModelRow]:
        return [r for r in self.rows if r.target == target]


def provide_analyses(services: NamedDependency[Services]) -> AnalysisReads:
    return AnalysisReads(services)


def provide_view(
    analyses: NamedDependency[AnalysisReads],
    device: ViewDevice = None,
    select: Selection = "best",
    precision: PrecisionFilter = None,
    runtime: RuntimeView = "eager",
) -> View:
    """The filters every per-model analysis takes, as one dependency (their query parameters)."""
    return View(analyses.rows(RowQuery(device, precision, select, runtime=runtime)), device)


@dataclass(frozen=True)
class ComparisonQuery:
    """What ``/compare`` compares: two sides (targets or classes), each in its runtime."""

    a: str
    b: str
    precision: str | None
    batch_size: int | None
    select: str
    a_runtime: str
    b_runtime: str

    def rows(self, analyses: AnalysisReads) -> list[analysis.ModelRow]:
        runtime = self.a_runtime if self.a_runtime == self.b_runtime else None  # both runtimes' rows
        return analyses.rows(RowQuery(None, self.precision, self.select, (self.a, self.b), runtime))


def provide_comparison(
    a: ViewSide,
    b: ViewSide,
    precision: PrecisionFilter = None,
    batch_size: Annotated[int | None, QueryParameter(ge=1, le=1024)] = None,
    select: Selection = "best",
    a_runtime: RuntimeView = "eager",
    b_runtime: RuntimeView = "eager",
) -> ComparisonQuery:
    return ComparisonQuery(a, b, precision, batch_size, select, a_runtime, b_runtime)


ANALYSES = {"analyses": Provide(provide_analyses, sync_to_thread=False)}


class AnalysisController(Controller):
    path = "/v1/analysis"
    tags = ("analysis",)  # type: ignore[assignment]
    dependencies = {  # noqa: RUF012
        **ANALYSES,
        "view": Provide(provide_view, sync_to_thread=True),
        "comparison": Provide(provide_comparison, sync_to_thread=False),
    }

    @get(
        "/models",
        summary="Every profiled model with its indices and accuracy (and where it comes from)",
        sync_to_thread=True,
    )
    def models(self, view: NamedDependency[View]) -> list[analysis.ModelRow]:
        return view.rows

    @get(
        "/table1",
        summary="Per-image inference time (ms) and images/s by batch size (paper Table 1)",
        sync_to_thread=True,
    )
    def table1(self, view: NamedDependency[View]) -> list[Table1Row]:
        return [
            Table1Row(
                **_identity(r),
                ms_per_image={c.batch_size: c.ms_per_image for c in r.batches},
                images_per_s={c.batch_size: c.images_per_s for c in r.batches},
                oom=[c.batch_size for c in r.batches if c.status == "oom"],
            )
            for r in view.rows
        ]

    @get("/table2", summary="Memory (MB) by batch size (paper Table 2)", sync_to_thread=True)
    def table2(self, view: NamedDependency[View]) -> list[Table2Row]:
        return [
            Table2Row(
                **_identity(r),
                param_file_mb=r.param_file_mb,
                memory_mb={c.batch_size: c.memory_mb for c in r.batches},
                oom=[c.batch_size for c in r.batches if c.status == "oom"],
            )
            for r in view.rows
        ]

    @get(
        "/table3",
        summary="The most accurate model under memory and frame-rate bounds (paper Table 3)",
        description="Bounds default to the paper's: memory 700, 1000, 1400 MB x 15, 30, 60 images/s, "
        "at batch size 1. Repeat max_memory_mb / min_fps for other bounds.",
        sync_to_thread=True,
    )
    def table3(
        self,
        view: NamedDependency[View],
        max_memory_mb: Annotated[list[float] | None, QueryParameter(max_items=16)] = None,
        min_fps: Annotated[list[float] | None, QueryParameter(max_items=16)] = None,
        batch_size: BatchQuery = 1,
        memory: Annotated[
            analysis.MemoryBasis,
            QueryParameter(
                description="total (default, the paper's): all the memory the process holds; model: "
                "less the floor it held before the model was built (libraries, CUDA context)"
            ),
        ] = "total",
    ) -> list[Table3]:
        bounds = max_memory_mb or analysis.DEFAULT_MEMORY_BOUNDS_MB
        fps = min_fps or analysis.DEFAULT_FPS_BOUNDS
        return [
            Table3(
                device=class_of(t),
                target=t,
                batch_size=batch_size,
                memory_floor_mb=_floor(view.on(t)),
                cells=analysis.best_under_constraints(view.on(t), bounds, fps, batch_size, memory),
            )
            for t in view.targets()
        ]

    @get(
        "/density",
        summary="Top-1 accuracy density: top-1 per million parameters (paper Fig. 2)",
        sync_to_thread=True,
    )
    def density(
        self,
        analyses: NamedDependency[AnalysisReads],
        device: ViewDevice = None,
        select: Selection = "best",
    ) -> list[analysis.DensityRow]:
        return analysis.accuracy_density(analyses.rows(RowQuery(device, select=select)))

    @get(
        "/throughput",
        summary="Top-1 vs images/s: Pareto frontier and linear upper bound (paper Fig. 3)",
        sync_to_thread=True,
    )
    def throughput(
        self, view: NamedDependency[View], batch_size: BatchQuery = 1
    ) -> list[analysis.ThroughputBound]:
        return [analysis.throughput_bound(view.rows, t, batch_size) for t in view.targets()]

    @get(
        "/memory-fits",
        summary="Memory vs parameter size: a linear fit per batch size (paper Fig. 4)",
        sync_to_thread=True,
    )
    def memory_fits(self, view: NamedDependency[View]) -> list[analysis.MemoryFit]:
        return analysis.memory_fits(view.rows)

    @get(
        "/runtimes",
        summary="Each model in every runtime measured, at one batch size: ms/image, speed-up over eager",
        description="Per model, target and precision, the profile that counts in each runtime "
        f"({', '.join(RUNTIME_NAMES)}): its time per image, eager's over it, the runtime's "
        "one-time preparation (export, session) and the first (cold) call at this batch size.",
        sync_to_thread=True,
    )
    def runtimes(
        self,
        analyses: NamedDependency[AnalysisReads],
        device: ViewDevice = None,
        select: Selection = "best",
        precision: PrecisionFilter = None,
        batch_size: BatchQuery = 1,
    ) -> list[analysis.RuntimeRow]:
        rows = analyses.rows(RowQuery(device, precision, select, runtime=None))
        return analysis.runtime_table(rows, batch_size)

    @get(
        "/compare",
        summary="Each model on two devices or in two runtimes, per batch size, with the time ratio b/a",
        description="a and b are device targets (GET /v1/devices) or classes (a class stands for its "
        "newest profile of the model on any of its targets), each side in its runtime (a_runtime, "
        "b_runtime; eager by default). In two runtimes a and b may be one target: b_over_a is then "
        "one runtime's time over the other's where both ran. Without batch_size, every batch size "
        "both sides measured.",
        sync_to_thread=True,
    )
    def compare(
        self, analyses: NamedDependency[AnalysisReads], comparison: NamedDependency[ComparisonQuery]
    ) -> list[analysis.Comparison]:
        q = comparison
        return analysis.compare_devices(
            q.rows(analyses), q.a, q.b, q.batch_size, a_runtime=q.a_runtime, b_runtime=q.b_runtime
        )

    @get(
        "/paper",
        summary="Measured figures beside the paper's: per-model time ratio, rank correlation, memory lines",
        description="For each of the paper's models measured on `device` (a target, or a class: its "
        "target with the most of the paper's models measured), its per-image time over the paper's "
        "Table 1 time on `paper` (default: the nearest of the paper's devices, the Titan Xp for a CUDA "
        "GPU, the Jetson TX1 otherwise), the rank correlation of the two time orderings, and the "
        "memory-vs-size line measured beside the paper's two (its text, Titan Xp).",
        sync_to_thread=True,
        responses=error_responses(400),
    )
    def against_paper(
        self,
        analyses: NamedDependency[AnalysisReads],
        device: DeviceSide,
        paper: Annotated[Literal["paper/titan-xp", "paper/jetson-tx1"] | None, QueryParameter()] = None,
        batch_size: BatchQuery = 1,
        select: Selection = "best",
    ) -> paper_devices.PaperComparison:
        measured = analyses.rows(RowQuery(device, "fp32", select))
        target = paper_devices.measured_target(measured, device)
        return paper_devices.against_paper(measured, analyses.paper_rows(), target, batch_size, paper)


FIGURES = ("ball", "density", "throughput", "memory")


class FiguresController(Controller):
    path = "/v1/figures"
    tags = ("analysis",)  # type: ignore[assignment]
    dependencies = ANALYSES

    @get(
        "/{name:str}",
        summary="The paper's figures as PNG or SVG: ball, density, throughput, memory",
        description="name is `<figure>.png` or `<figure>.svg`.",
        sync_to_thread=True,
    )
    def figure(
        self,
        name: FromPath[str],
        analyses: NamedDependency[AnalysisReads],
        device: ViewDevice = None,
        select: Selection = "best",
        batch_size: BatchQuery = 1,
    ) -> Response[bytes]:
        from service import figures

        stem, _, fmt = name.rpartition(".")
        if stem not in FIGURES or fmt not in ("png", "svg"):
            raise NotFoundException(
                f"no figure {name!r}: use one of " + ", ".join(f"{f}.png/.svg" for f in FIGURES)
            )
        rows = analyses.rows(RowQuery(device, select=select))
        data = figures.render(stem, rows, fmt, batch_size=batch_size)
        return Response(data, media_type="image/png" if fmt == "png" else "image/svg+xml")
