"""The paper's analyses over stored profiles (Bianco et al., 2018, Section V), torch-free.

- Table 1 / Table 2: per-image time and memory by batch size, per model.
- Table 3: the most accurate model under a memory bound and a frame-rate bound.
- Accuracy density: top-1 per million parameters (Fig. 2).
- Accuracy vs images/s: the Pareto frontier and its linear upper bound (Fig. 3).
- Memory vs parameter size: a least-squares line per batch size, with R² (Fig. 4).
- Cross-device: one model on two devices (targets, or classes), or in two runtimes, side by side,
  per batch size.
- Runtimes: each model in every runtime measured, its time and speed-up over eager
  (:func:`runtime_table`).

Every row is one model on one device target (``cuda/nvidia-l4-24gb``: see :mod:`dnnprof.targets`);
the groups (frontier, fits, Table 3) are per target, so two GPUs of one class are never mixed. A
``device`` filter takes a class (all its targets, each apart) or one target.

Accuracy comes from a measured profile when one exists, else from an imported published table,
else from the package's own metadata (torchvision's weights); every row says which.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from msgspec import Struct

from dnnprof.contract import ModelInfo, ProfileRecord, PublishedResult
from dnnprof.selection import GroupKey, is_noisy, may_count, order_for
from dnnprof.targets import class_of, matches

MEGABYTE = 1_000_000  # memory bounds and sizes are in megabytes (10^6 bytes), as the paper's tables


class BatchCell(Struct, kw_only=True):
    batch_size: int
    status: str  # "ok", "oom", "error"
    ms_per_image: float | None = None
    images_per_s: float | None = None
    memory_mb: float | None = None  # all the process holds (the paper's figure)
    #: The model's own share: ``memory_mb`` less the floor the process held before the model.
    model_memory_mb: float | None = None
    noisy: bool = False  # its runs or processes spread over the threshold
    #: The first (cold) call at this batch size, before warm-up (a compile's compilation).
    first_call_s: float | None = None


class ModelRow(Struct, kw_only=True):
    model: str
    paper_name: str | None
    device: str  # the class
    target: str  # the device target it ran on
    device_name: str
    precision: str
    profile_id: str
    params: int
    param_file_mb: float
    gflops: float | None  # None where FLOPs could not be counted (the result says why)
    top1: float | None
    top5: float | None
    accuracy_source: str | None
    batches: list[BatchCell]
    measured_at: float = 0.0  # when its profile was asked for
    #: Fresh processes behind the figures, and whether any batch size's timing was noisy.
    repeats: int = 1
    noisy: bool = False
    #: What the process held before the model was built (libraries, CUDA context), in MB.
    memory_floor_mb: float | None = None
    #: "measured", or where published figures come from ("bianco2018": the paper's Table 1).
    kind: str = "measured"
    #: What ran it (eager for the paper's published rows), and its one-time preparation.
    runtime: str = "eager"
    runtime_prepare_s: float | None = None

    def cell(self, batch_size: int) -> BatchCell | None:
        return next((c for c in self.batches if c.batch_size == batch_size), None)


def accuracy_for(
    record: ProfileRecord, published: dict[str, PublishedResult], catalogue: dict[str, ModelInfo]
) -> tuple[float | None, float | None, str | None]:
    result = record.result
    if result is not None and result.top1 is not None:
        return result.top1, result.top5, "measured"
    model = record.settings.model
    return published_accuracy(model, catalogue.get(model) or record.model, published)


def published_accuracy(
    model: str, info: ModelInfo, published: dict[str, PublishedResult]
) -> tuple[float | None, float | None, str | None]:
    """Accuracy published for a qualified name: an imported or shipped table's row, else the
    package's metadata (torchvision's per-weights ``acc@1``)."""
    # A plain timm name stands for its default tag's weights, as timm's results tables name them.
    keys = [model]
    if info.source == "timm" and "." not in model and info.default_tag:
        keys.append(f"{model}.{info.default_tag}")
    for key in keys:
        if key in published:
            p = published[key]
            return p.top1, p.top5, f"published:{p.source}"
    if info.published_top1 is not None:
        return info.published_top1, info.published_top5, f"{info.source}-metadata"
    return None, None, None


def is_published_of(result: PublishedResult, qualified: str) -> bool:
    """Whether an imported row is of one model: of that tag for "timm:resnet50.a1_in1k", of any
    tag for "timm:resnet50"."""
    if result.resolved == qualified:
        return True
    return "." not in qualified and (result.resolved or "").startswith(qualified + ".")


def published_of(results: Iterable[PublishedResult], qualified: str) -> list[PublishedResult]:
    """The imported rows of one model (see :func:`is_published_of`)."""
    return [r for r in results if is_published_of(r, qualified)]


def best_published(results: Iterable[PublishedResult]) -> dict[str, PublishedResult]:
    """Per resolved name ("timm:resnet50.a1_in1k": tags are kept), the imported row; where several
    rows resolve to one name (an untagged spelling, two sources), the untagged one, else the best."""
    out: dict[str, PublishedResult] = {}
    for r in results:
        if r.resolved is None:
            continue
        current = out.get(r.resolved)
        untagged = "." not in r.model
        if (
            current is None
            or (untagged and "." in current.model)
            or (untagged == ("." not in current.model) and r.top1 > current.top1)
        ):
            out[r.resolved] = r
    return out


def model_rows(
    records: Iterable[ProfileRecord],
    *,
    published: Iterable[PublishedResult] = (),
    catalogue: dict[str, ModelInfo] | None = None,
    device: str | None = None,
    precision: str | None = None,
    select: str = "best",
    runtime: str | None = None,
) -> list[ModelRow]:
    """One row per :class:`GroupKey` (model, device target, precision, runtime) from its
    profiles that may count: the best one (:func:`quality`) or the newest (``select``).
    ``device`` selects a class (every target of it) or one target."""
    by_model = best_published(published)
    catalogue = catalogue or {}
    rows: dict[GroupKey, ModelRow] = {}
    done = [r for r in records if may_count(r)]
    for record in sorted(done, key=order_for(select), reverse=True):
        result = record.result
        assert result is not None  # may_count
        s = record.settings
        key = GroupKey.of(record)
        if not matches(device, key.target) or precision not in (None, s.precision):
            continue
        if runtime not in (None, s.runtime) or key in rows:
            continue
        target = key.target
        top1, top5, source = accuracy_for(record, by_model, catalogue)
        floor = result.memory_floor_bytes
        cells = []
        for b in result.batches:
            total = b.memory.total_bytes if b.memory else None
            cells.append(
                BatchCell(
                    batch_size=b.batch_size,
                    status=b.status,
                    ms_per_image=b.latency.mean_ms if b.latency else None,
                    images_per_s=b.latency.images_per_s if b.latency else None,
                    memory_mb=total / MEGABYTE if total is not None else None,
                    model_memory_mb=max(total - floor, 0) / MEGABYTE if total is not None and floor else None,
                    noisy=bool(b.latency and b.latency.noisy),
                    first_call_s=b.first_call_s,
                )
            )
        rows[key] = ModelRow(
            model=s.model,
            paper_name=record.model.paper_name,
            device=s.device,
            target=target,
            device_name=result.fingerprint.device_name,
            precision=s.precision,
            runtime=s.runtime,
            runtime_prepare_s=result.runtime.prepare_s if result.runtime else None,
            profile_id=record.id,
            params=result.params,
            param_file_mb=result.param_file_bytes_fp32 / MEGABYTE,
            gflops=result.flops / 1e9 if result.flops is not None else None,
            top1=top1,
            top5=top5,
            accuracy_source=source,
            batches=sorted(cells, key=lambda c: c.batch_size),
            measured_at=record.created_at,
            repeats=result.processes,
            noisy=is_noisy(record),
            memory_floor_mb=floor / MEGABYTE if floor else None,
        )
    return sorted(rows.values(), key=lambda r: (r.target, r.model))


# -- Table 3 -----------------------------------------------------------------------------------


class ConstrainedBest(Struct, kw_only=True):
    memory_basis: str  # "total": all the process holds (the paper's); "model": less the floor
    max_memory_mb: float
    min_fps: float
    batch_size: int
    model: str | None
    top1: float | None
    images_per_s: float | None
    memory_mb: float | None
    candidates: int


DEFAULT_MEMORY_BOUNDS_MB = (700.0, 1000.0, 1400.0)
DEFAULT_FPS_BOUNDS = (15.0, 30.0, 60.0)
#: Table 3's memory: all the process holds (the paper's), or less the floor it held before the model.
MemoryBasis = Literal["total", "model"]


def best_under_constraints(
    rows: Sequence[ModelRow],
    memory_bounds_mb: Iterable[float],
    fps_bounds: Iterable[float],
    batch_size: int = 1,
    memory_basis: MemoryBasis = "total",
) -> list[ConstrainedBest]:
    """Table 3: for each memory bound x frame-rate bound, the most accurate model that fits.

    ``memory_basis`` "total" bounds all the memory the process holds (the paper's: a device must
    hold it all); "model" bounds the model's own share, the floor of libraries or CUDA context
    left out (a CPU process holds about 1 GB before any model, which empties the paper's 700 MB
    and 1000 MB rows)."""
    out = []
    for mem in memory_bounds_mb:
        for fps in fps_bounds:
            fitting = []
            for row in rows:
                cell = row.cell(batch_size)
                if row.top1 is None or cell is None or cell.status != "ok":
                    continue
                used = cell.memory_mb if memory_basis == "total" else cell.model_memory_mb
                if used is not None and used <= mem and (cell.images_per_s or 0) >= fps:
                    fitting.append((row, cell))
            best = max(fitting, key=lambda rc: (rc[0].top1, rc[1].images_per_s), default=None)
            out.append(
                ConstrainedBest(
                    memory_basis=memory_basis,
                    max_memory_mb=mem,
                    min_fps=fps,
                    batch_size=batch_size,
                    model=best[0].model if best else None,
                    top1=best[0].top1 if best else None,
                    images_per_s=best[1].images_per_s if best else None,
                    memory_mb=(best[1].memory_mb if memory_basis == "total" else best[1].model_memory_mb)
                    if best
                    else None,
                    candidates=len(fitting),
                )
            )
    return out


# -- density -----------------------------------------------------------------------------------


class DensityRow(Struct, kw_only=True):
    model: str
    device: str
    target: str
    top1: float
    params_m: float
    top1_per_mparam: float
    accuracy_source: str | None


def accuracy_density(rows: Sequence[ModelRow]) -> list[DensityRow]:
    out = [
        DensityRow(
            model=r.model,
            device=r.device,
            target=r.target,
            top1=r.top1,
            params_m=r.params / 1e6,
            top1_per_mparam=r.top1 / (r.params / 1e6),
            accuracy_source=r.accuracy_source,
        )
        for r in rows
        if r.top1 is not None and r.params > 0
    ]
    return sorted(out, key=lambda d: d.top1_per_mparam, reverse=True)


# -- fits --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LineFit:
    slope: float
    intercept: float
    r2: float
    n: int


def least_squares(xs: Sequence[float], ys: Sequence[float]) -> LineFit:
    n = len(xs)
    if n < 2:
        raise ValueError("a line needs at least two points")
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        raise ValueError("all x values are equal: no line")
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    intercept = my - slope * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - (intercept + slope * x)) ** 2 for x, y in zip(xs, ys, strict=True))
    return LineFit(slope, intercept, 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0, n)


class FrontierPoint(Struct, kw_only=True):
    model: str
    images_per_s: float
    top1: float


class ThroughputBound(Struct, kw_only=True):
    device: str  # the class
    target: str
    batch_size: int
    points: list[FrontierPoint]
    frontier: list[FrontierPoint]
    intercept: float | None
    slope: float | None
    method: str = (
        "least-squares line through the Pareto-optimal models (no model both faster and more accurate), "
        "raised until no model lies above it: top-1 <= intercept + slope * images/s"
    )


def pareto_frontier(points: Sequence[FrontierPoint]) -> list[FrontierPoint]:
    """Models that no other model beats on both images/s and top-1, fastest first."""
    frontier: list[FrontierPoint] = []
    best_top1 = -math.inf
    for p in sorted(points, key=lambda p: (-p.images_per_s, -p.top1)):
        if p.top1 > best_top1:
            frontier.append(p)
            best_top1 = p.top1
    return frontier


def throughput_bound(rows: Sequence[ModelRow], target: str, batch_size: int = 1) -> ThroughputBound:
    """The frontier and bound of one device target (the service asks per target, so two GPUs'
    models are never on one frontier; a class here puts all its targets' rows on one)."""
    points = []
    for r in rows:
        cell = r.cell(batch_size)
        if matches(target, r.target) and r.top1 is not None and cell and cell.images_per_s:
            points.append(FrontierPoint(model=r.model, images_per_s=cell.images_per_s, top1=r.top1))
    frontier = pareto_frontier(points)
    intercept = slope = None
    if len(frontier) >= 2:
        fit = least_squares([p.images_per_s for p in frontier], [p.top1 for p in frontier])
        slope = fit.slope
        intercept = max(p.top1 - slope * p.images_per_s for p in points)  # the bound holds for all
    return ThroughputBound(
        device=class_of(target),
        target=target,
        batch_size=batch_size,
        points=points,
        frontier=frontier,
        intercept=intercept,
        slope=slope,
    )


class MemoryFit(Struct, kw_only=True):
    device: str  # the class
    target: str
    batch_size: int
    slope: float  # MB of memory per MB of parameters
    intercept_mb: float  # memory of a (hypothetical) parameter-free model: context + runtime
    r2: float
    models: int


def memory_fits(rows: Sequence[ModelRow]) -> list[MemoryFit]:
    """Memory vs parameter-file size, one least-squares line per device target and batch size."""
    groups: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for r in rows:
        for c in r.batches:
            if c.status == "ok" and c.memory_mb is not None:
                groups.setdefault((r.target, c.batch_size), []).append((r.param_file_mb, c.memory_mb))
    out = []
    for (target, batch_size), pts in sorted(groups.items()):
        try:
            fit = least_squares([p[0] for p in pts], [p[1] for p in pts])
        except ValueError:
            continue
        out.append(
            MemoryFit(
                device=class_of(target),
                target=target,
                batch_size=batch_size,
                slope=fit.slope,
                intercept_mb=fit.intercept,
                r2=fit.r2,
                models=fit.n,
            )
        )
    return out


class Comparison(Struct, kw_only=True):
    """One model at one batch size on devices a and b (the paper's Titan Xp vs TX1 discussion)."""

    model: str
    batch_size: int
    precision: str
    a_device: str  # as asked: a class or a target
    b_device: str
    a_target: str  # where each side's profile ran
    b_target: str
    a_ms_per_image: float
    b_ms_per_image: float
    b_over_a: float  # > 1: b is slower
    a_device_name: str
    b_device_name: str
    a_runtime: str = "eager"
    b_runtime: str = "eager"


def _pairs_with(ra: ModelRow, rb: ModelRow, a: str, b: str) -> bool:
    """Whether ``ra`` may stand for side a against ``rb``: in one runtime, two devices (never
    rb's own target); in two runtimes, rb's own target, or any of a's where a names another."""
    if ra.runtime == rb.runtime:
        return ra.target != rb.target
    return ra.target == rb.target or a != b


def compare_devices(
    rows: Sequence[ModelRow],
    a: str,
    b: str,
    batch_size: int | None = None,
    *,
    a_runtime: str = "eager",
    b_runtime: str = "eager",
) -> list[Comparison]:
    """Per model and batch size (one, or every one both sides measured), the time on b over the
    time on a. ``a`` and ``b`` are classes or targets, each side in its runtime; a class stands
    for its newest profile of the model on any of its targets. In one runtime the sides are two
    devices (never the target the other side stands for); in two runtimes they may be one target,
    the speed-up of a runtime over another where it is deployed (issue 25)."""
    by_model: dict[tuple[str, str], list[ModelRow]] = {}
    for r in sorted(rows, key=lambda r: r.measured_at, reverse=True):
        by_model.setdefault((r.model, r.precision), []).append(r)
    out = []
    for (model, precision), candidates in sorted(by_model.items()):
        rb = next((r for r in candidates if matches(b, r.target) and r.runtime == b_runtime), None)
        ra = next(
            (
                r
                for r in candidates
                if matches(a, r.target) and r.runtime == a_runtime and rb and _pairs_with(r, rb, a, b)
            ),
            None,
        )
        if ra is None or rb is None:
            continue
        sizes = [batch_size] if batch_size is not None else sorted({c.batch_size for c in ra.batches})
        for size in sizes:
            ca, cb = ra.cell(size), rb.cell(size)
            if not (ca and cb and ca.ms_per_image and cb.ms_per_image):
                continue
            out.append(
                Comparison(
                    model=model,
                    batch_size=size,
                    precision=precision,
                    a_device=a,
                    b_device=b,
                    a_target=ra.target,
                    b_target=rb.target,
                    a_ms_per_image=ca.ms_per_image,
                    b_ms_per_image=cb.ms_per_image,
                    b_over_a=cb.ms_per_image / ca.ms_per_image,
                    a_device_name=ra.device_name,
                    b_device_name=rb.device_name,
                    a_runtime=a_runtime,
                    b_runtime=b_runtime,
                )
            )
    return out


class RuntimeCell(Struct, kw_only=True):
    runtime: str
    profile_id: str
    ms_per_image: float | None
    images_per_s: float | None
    #: Eager's time over this runtime's (> 1: faster than eager), where both were measured.
    speedup_over_eager: float | None
    prepare_s: float | None
    first_call_s: float | None


class RuntimeRow(Struct, kw_only=True):
    """One model on one target in one precision, at one batch size, in every runtime measured."""

    model: str
    target: str
    precision: str
    batch_size: int
    cells: list[RuntimeCell]


def runtime_table(rows: Sequence[ModelRow], batch_size: int) -> list[RuntimeRow]:
    """Model x runtime at one batch size: ms/image, speed-up over eager, preparation and first
    call (rows are the profiles that count, so a runtime whose outputs diverged is absent)."""
    groups: dict[tuple[str, str, str], dict[str, ModelRow]] = {}
    for r in rows:
        groups.setdefault((r.model, r.target, r.precision), {})[r.runtime] = r
    out = []
    for (model, target, precision), by_runtime in sorted(groups.items()):
        eager = by_runtime.get("eager")
        base = eager.cell(batch_size) if eager else None
        cells = []
        for runtime, r in sorted(by_runtime.items(), key=lambda kv: (kv[0] != "eager", kv[0])):
            cell = r.cell(batch_size)
            ms = cell.ms_per_image if cell else None
            speedup = base.ms_per_image / ms if base and base.ms_per_image and ms else None
            cells.append(
                RuntimeCell(
                    runtime=runtime,
                    profile_id=r.profile_id,
                    ms_per_image=ms,
                    images_per_s=cell.images_per_s if cell else None,
                    speedup_over_eager=speedup,
                    prepare_s=r.runtime_prepare_s,
                    first_call_s=cell.first_call_s if cell else None,
                )
            )
        out.append(
            RuntimeRow(model=model, target=target, precision=precision, batch_size=batch_size, cells=cells)
        )
    return out
