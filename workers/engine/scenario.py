"""The paper's scenario for one model in one measuring process, as a row of named steps
(:func:`measure_process`): ``open_device`` → ``open_accuracy_set`` → ``build_for_profile`` →
``static_figures`` (parameters, parameter-file size, FLOPs, fingerprint) → ``prepare_model`` (to
the device; a runtime's export or compile and its outputs check) → the cells
(:class:`workers.engine.cells.CellMeasurer`: per batch size the warm-up, the memory it takes and
the timed runs) → ``profiled_passes`` (where the request asks for layers: each batch size's layer
profile in the runtime's own profiler, after every timed cell and apart from them) →
``measure_accuracy``.

Each batch size is handed to a sink the moment it is done (the runner stores it), so a time limit,
a crash or a cancel keeps what was measured. A batch size that runs out of memory is an ``oom``
cell and one that fails otherwise an ``error`` cell with its reason; the profile goes on, as the
paper's missing cells do. Several fresh processes measure one profile (``repeats``); the job
assembles their cells (:mod:`workers.aggregate`).
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from dnnprof.contract import (
    FlopCount,
    LayerProfile,
    ModelInfo,
    ProcessCell,
    ProcessEnd,
    ProcessStatic,
    ProfileResult,
    ProfileSettings,
    Progress,
)
from workers import aggregate
from workers.engine.accuracy import (
    AccuracyUnavailableError,
    check_head,
    eval_transform,
    evaluate,
    evenly_spaced,
    open_val_set,
)
from workers.engine.cells import CellMeasurer, ModelOnDevice
from workers.engine.device import (
    DTYPES,
    DeviceContext,
    PrecisionUnsupportedError,
    autocast_dtype,
    autocast_for,
    open_device,
)
from workers.engine.fingerprint import fingerprint
from workers.engine.flops import FLOP_METHOD_VERSION, count_model_flops
from workers.engine.layer_profilers import profiled_passes
from workers.engine.layers import module_tree
from workers.engine.models import build_model, count_params, deployed_form, parameter_file_bytes
from workers.engine.runtimes import check_outputs, runtime_for
from workers.engine.runtimes.base import CHECK_BATCH
from workers.engine.timing import WarmupPolicy
from workers.engine.uploaded import UploadedOnnx, upload_statics
from workers.phases import PhaseClock

__all__ = [
    "CollectingSink",
    "PrecisionUnsupportedError",
    "ProcessPlan",
    "ScenarioConfig",
    "Sink",
    "measure_process",
    "run_profile",
]


@dataclass
class ScenarioConfig:
    device_class: str
    memory_limit_mb: int = 0
    #: Threads on a CPU (DNNPROF_CPU_THREADS); None: chosen from the usable cores.
    cpu_threads: int | None = None
    warmup: WarmupPolicy = field(default_factory=WarmupPolicy)
    #: Timed runs last at least this long in all (and at least ``runs`` runs).
    min_timed_s: float = 0.2
    noisy_cv: float = aggregate.NOISY_CV
    #: Blocks of timed runs for one batch size while their spread stays over ``noisy_cv``.
    max_attempts: int = 3
    #: Energy per image where the device has a meter (its windows last at least a second).
    measure_energy: bool = True
    pretrained: bool = False
    #: Pretrained weights from the cache only, never downloaded (DNNPROF_WEIGHTS_OFFLINE).
    weights_offline: bool = False
    imagenet_val: Path | None = None
    imagenet_labels: Path | None = None
    loader_workers: int = 2
    #: Where runtimes keep what they prepare once (ONNX exports); None: a folder of this process.
    cache_dir: Path | None = None
    #: Before each batch size, wait at most this long for a quiet host (0: do not look).
    quiet_wait_s: float = 0.0


@dataclass(frozen=True)
class ProcessPlan:
    """What one measuring process of a profile does."""

    process: int = 0
    #: Batch sizes not to measure here: done by this process on an earlier attempt, or settled
    #: (out of memory, failed) by another process.
    skip: frozenset[int] = frozenset()
    #: The model's FLOP count where another process of the profile counted it.
    flops: FlopCount | None = None
    #: Counts kept across profiles (once per model, form, input size and counting method).
    flop_cache: FlopCache | None = None
    #: Accuracy is measured once per profile, by the first process.
    accuracy: bool = True
    #: The batch sizes profiled layer by layer after the timed cells (once per profile, by the
    #: first process).
    layers: tuple[int, ...] = ()


class FlopCache(Protocol):
    def get(self, model: str, input_size: int, version: int) -> FlopCount | None: ...
    def put(self, model: str, input_size: int, version: int, flops: FlopCount) -> None: ...


class Sink(Protocol):
    def progress(self, progress: Progress) -> None: ...
    def static(self, static: ProcessStatic) -> None: ...
    def cell(self, cell: ProcessCell) -> None: ...
    def layers(self, profile: LayerProfile) -> None: ...


class CollectingSink:
    """Keeps what one process reports, for callers in this process (tests, benchmarks)."""

    def __init__(self, on_progress: Callable[[Progress], None] = lambda p: None) -> None:
        self.on_progress = on_progress
        self.statics: list[ProcessStatic] = []
        self.cells: list[ProcessCell] = []
        self.layer_profiles: list[LayerProfile] = []

    def progress(self, progress: Progress) -> None:
        self.on_progress(progress)

    def static(self, static: ProcessStatic) -> None:
        self.statics.append(static)

    def cell(self, cell: ProcessCell) -> None:
        self.cells.append(cell)

    def layers(self, profile: LayerProfile) -> None:
        self.layer_profiles.append(profile)


def run_profile(
    info: ModelInfo,
    settings: ProfileSettings,
    config: ScenarioConfig,
    *,
    on_progress: Callable[[Progress], None] = lambda p: None,
    model: nn.Module | None = None,
    tag: str | None = None,
) -> ProfileResult:
    """One measuring process, in this process, assembled as the job assembles a profile (for
    tests and benchmarks; the service measures ``settings.repeats`` fresh processes)."""
    sink = CollectingSink(on_progress)
    plan = ProcessPlan(layers=settings.layers_batch_sizes)
    end = measure_process(info, settings, config, plan, sink, model=model, tag=tag)
    one = aggregate.assemble(info, settings, sink.statics, sink.cells, [end], noisy_cv=config.noisy_cv)
    assert one is not None  # measure_process stores its static part before it returns
    return one


def measure_process(
    info: ModelInfo,
    settings: ProfileSettings,
    config: ScenarioConfig,
    plan: ProcessPlan,
    sink: Sink,
    *,
    model: nn.Module | None = None,
    tag: str | None = None,
) -> ProcessEnd:
    """The steps of one measuring process, in order: open the device, prepare the model, its
    static figures, the cells, the accuracy. A runtime beside eager PyTorch replaces "prepare the
    model" and the forward the cells time; every other step stays as it is."""
    started = time.perf_counter()
    clock = PhaseClock()
    measuring = [bs for bs in settings.batch_sizes if bs not in plan.skip]
    progress = ProgressReporter(sink, plan.process, len(measuring))
    with clock.phase("device"):
        ctx = open_device(config.device_class, settings.precision, config.memory_limit_mb, config.cpu_threads)
    progress("loading")
    with clock.phase("build"):
        val_set = open_accuracy_set(info, settings, config, plan)  # before any download: fail fast
        built = build_for_profile(info, settings, config, model, tag)
    progress("flops")
    with clock.phase("static"):
        # Per-module FLOPs on the fp32 model, before static_figures casts it to the precision.
        # (An uploaded ONNX file has no module tree: the API refuses layers for it.)
        layered = plan.layers and isinstance(built.model, nn.Module)
        tree = module_tree(built.model, settings.input_size) if layered else None
        static = static_figures(info, settings, plan, ctx, built)
    with clock.phase("prepare"):
        on_device = prepare_model(built.model, settings, ctx, config.cache_dir)
    static.runtime = on_device.prepared.report
    sink.static(static)
    cells = CellMeasurer(on_device, ctx, settings, config, plan.process, clock)
    timed = TimedCells(sink)
    cells.measure_all(measuring, timed, lambda done, bs: progress("batch", done, batch_size=bs))
    if tree is not None:
        progress("layers", len(measuring))
        with clock.phase("layers"):
            for profile in profiled_passes(on_device, ctx, tree, plan.layers, timed.ms_per_image):
                sink.layers(profile)
    end = ProcessEnd(process=plan.process, wall_s=0.0)
    if val_set is not None:
        with clock.phase("accuracy"):
            accuracy = measure_accuracy(on_device, ctx, val_set, config, progress)
            end.top1, end.top5, end.accuracy_images = accuracy
    progress("done", len(measuring))
    end.wall_s = time.perf_counter() - started
    end.phases = clock.seconds
    return end


class TimedCells:
    """Passes the cells on to the sink and keeps each ok cell's mean per image (the profiled
    passes' run counts and their overhead against it)."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.ms_per_image: dict[int, float] = {}

    def progress(self, progress: Progress) -> None:
        self.sink.progress(progress)

    def static(self, static: ProcessStatic) -> None:
        self.sink.static(static)

    def cell(self, cell: ProcessCell) -> None:
        if cell.status == "ok" and cell.run_seconds:
            self.ms_per_image[cell.batch_size] = (
                1e3 * sum(cell.run_seconds) / len(cell.run_seconds) / cell.batch_size
            )
        self.sink.cell(cell)

    def layers(self, profile: LayerProfile) -> None:
        self.sink.layers(profile)


@dataclass
class ProgressReporter:
    """The stage this process is at, as the job's progress."""

    sink: Sink
    process: int
    total: int

    def __call__(self, stage: str, done: int = 0, **kw) -> None:
        self.sink.progress(
            Progress(stage=stage, batches_done=done, batches_total=self.total, process=self.process + 1, **kw)
        )


@dataclass
class BuiltModel:
    """The model as built (fp32, on the CPU), in the form it is profiled."""

    model: nn.Module
    form: str
    pretrained: bool


def open_accuracy_set(info: ModelInfo, settings: ProfileSettings, config: ScenarioConfig, plan: ProcessPlan):
    """The validation images where this process measures accuracy (the first process), else None."""
    if not (settings.accuracy and plan.accuracy):
        return None
    val_set = evenly_spaced(
        open_val_set(config.imagenet_val, eval_transform(info, settings.input_size), config.imagenet_labels),
        settings.accuracy_images,
    )
    check_head(info, val_set)
    return val_set


def build_for_profile(
    info: ModelInfo,
    settings: ProfileSettings,
    config: ScenarioConfig,
    model: nn.Module | None,
    tag: str | None,
) -> BuiltModel:
    pretrained = config.pretrained or settings.accuracy
    if model is None:
        model = _load(info, pretrained, tag, settings.input_size, config.weights_offline)
    model.eval()
    form = "as built"
    if settings.reparameterize:
        model, _ = deployed_form(model)
        form = "deployed"
    return BuiltModel(model, form, pretrained)


def static_figures(
    info: ModelInfo, settings: ProfileSettings, plan: ProcessPlan, ctx: DeviceContext, built: BuiltModel
) -> ProcessStatic:
    """Parameters, parameter-file size, FLOPs (counted on the fp32 model) and the fingerprint."""
    model, size = built.model, settings.input_size
    # An uploaded ONNX file (issue 42): counted from its graph; its file is its parameter file.
    uploaded = upload_statics(model) if isinstance(model, UploadedOnnx) else None
    file_bytes_fp32 = uploaded[1] if uploaded else parameter_file_bytes(model.float())
    flops = plan.flops or (uploaded[2] if uploaded else counted_flops(model, info, settings, plan.flop_cache))
    dtype = DTYPES[settings.precision]
    return ProcessStatic(
        process=plan.process,
        params=uploaded[0] if uploaded else count_params(model),
        param_file_bytes_fp32=file_bytes_fp32,
        param_file_bytes=parameter_file_bytes(model.to(dtype=dtype))
        if dtype != torch.float32
        else file_bytes_fp32,
        input_size=size,
        flops=flops,
        fingerprint=fingerprint(
            ctx.device_class,
            ctx.device,
            threads_policy=ctx.threads_policy,
            autocast_dtype=autocast_dtype(settings.precision, ctx.device),
            nvml_handle=ctx.nvml_handle,
            device_uuid=ctx.uuid,
        ),
        timing_method=ctx.timer.method,
        weights="pretrained" if built.pretrained else "random",
        memory_floor_bytes=ctx.floor,
        form=built.form,
    )


def counted_flops(
    model: nn.Module, info: ModelInfo, settings: ProfileSettings, cache: FlopCache | None
) -> FlopCount:
    """The model's FLOPs: from the cache where this model, form and input size were counted by
    the same method before, else counted now (and kept where the count is complete)."""
    size = settings.input_size
    key = settings.model + (":deployed" if settings.reparameterize else "")
    cached = cache.get(key, size, FLOP_METHOD_VERSION) if cache is not None else None
    if cached is not None:
        return cached
    flops = count_model_flops(model, size, info.published_gmacs if size == info.input_size else None)
    if cache is not None and flops.flops is not None:
        cache.put(key, size, FLOP_METHOD_VERSION, flops)
    return flops


def prepare_model(
    model: nn.Module, settings: ProfileSettings, ctx: DeviceContext, cache: Path | None = None
) -> ModelOnDevice:
    """The module moved to the device in the profile's dtype, then prepared by its runtime (an
    export, a compile; eager as it is), whose outputs are checked against eager's on one input."""
    dtype = DTYPES[settings.precision]
    memory_format = torch.channels_last if settings.channels_last else torch.contiguous_format
    model = model.to(device=ctx.device, dtype=dtype, memory_format=memory_format)
    on_device = ModelOnDevice(model, settings.precision, dtype, memory_format, settings.input_size)
    runtime = runtime_for(settings.runtime, ctx.device_class)
    if settings.runtime == "eager":  # the reference itself: nothing to check it against
        on_device.prepared = runtime.prepare(model, settings, ctx, Path())
        return on_device
    with contextlib.ExitStack() as stack:
        if cache is None:
            cache = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dnnprof-runtime-")))
        on_device.prepared = runtime.prepare(model, settings, ctx, cache)
        x = on_device.make_input(CHECK_BATCH, ctx.device)
        with autocast_for(settings.precision, ctx.device):
            on_device.prepared.report.outputs = check_outputs(
                model, on_device.prepared, x, settings.precision
            )
    return on_device


def measure_accuracy(
    on_device: ModelOnDevice,
    ctx: DeviceContext,
    val_set,
    config: ScenarioConfig,
    progress: ProgressReporter,
) -> tuple[float, float, int]:
    def accuracy_progress(done: int, of: int) -> None:
        progress("accuracy", progress.total, message=f"{done}/{of} images")

    if on_device.prepared.report.name == "eager":
        model = on_device.model
    else:  # the runtime's own outputs: the accuracy of the form that is deployed

        def model(images: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(on_device.prepared.logits(images)).to(images.device)

    with torch.inference_mode(), autocast_for(on_device.precision, ctx.device):
        return evaluate(
            model,
            val_set,
            ctx.device,
            dtype=on_device.dtype,
            memory_format=on_device.memory_format,
            workers=config.loader_workers,
            on_progress=accuracy_progress,
        )


#: The seed random weights are built from (the RNG's state is restored after the build).
RANDOM_WEIGHTS_SEED = 0


def _load(info: ModelInfo, pretrained: bool, tag: str | None, input_size: int, offline: bool) -> nn.Module:
    if not pretrained:
        # Random weights from a fixed seed: the architecture determines them, so their export is
        # found again by any later process (workers/engine/runtimes/cache.py).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_WEIGHTS_SEED)
            return build_model(info, tag=tag, input_size=input_size)
    try:
        return build_model(info, pretrained=True, tag=tag, input_size=input_size, offline=offline)
    except Exception as exc:
        raise AccuracyUnavailableError(
            f"could not load the pretrained weights of {info.name} "
            f"({info.weights_url or 'no published URL'}): {type(exc).__name__}: {exc}"
        ) from exc
