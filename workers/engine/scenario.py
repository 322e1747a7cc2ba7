"""The paper's scenario for one model in one measuring process: parameters, parameter-file size and
FLOPs once, then per batch size the warm-up, the memory it takes and the timed runs.

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
from typing import NamedTuple, Protocol

import numpy as np
import torch
from torch import nn

from dnnprof.contract import (
    FlopCount,
    HostLoad,
    ModelInfo,
    ProcessCell,
    ProcessEnd,
    ProcessStatic,
    ProfileResult,
    ProfileSettings,
    Progress,
    TimingAttempt,
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
from workers.engine.device import (
    DTYPES,
    DeviceContext,
    PrecisionUnsupportedError,
    autocast_dtype,
    autocast_for,
    open_device,
)
from workers.engine.energy import MIN_WINDOW_S, NO_METER, EnergyMeter, energy_meter
from workers.engine.fingerprint import fingerprint
from workers.engine.flops import count_model_flops
from workers.engine.host import HostLoadMeter, wait_for_quiet_host
from workers.engine.memory import is_out_of_memory
from workers.engine.models import build_model, count_params, deployed_form, parameter_file_bytes
from workers.engine.phases import PhaseClock
from workers.engine.runtimes import Prepared, check_outputs, frames_compiled, runtime_for
from workers.engine.runtimes.base import CHECK_BATCH
from workers.engine.runtimes.eager import eager
from workers.engine.timing import Warmup, WarmupPolicy, settling_point, warm_up

__all__ = [
    "DTYPES",
    "CellMeasurer",
    "PrecisionUnsupportedError",
    "ScenarioConfig",
    "measure_process",
    "run_profile",
]


@dataclass
class ScenarioConfig:
    device_class: str
    memory_limit_mb: int = 0
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
    #: The model's FLOP count where it was counted before (once per model and input size).
    flops: FlopCount | None = None
    #: Accuracy is measured once per profile, by the first process.
    accuracy: bool = True


class Sink(Protocol):
    def progress(self, progress: Progress) -> None: ...
    def static(self, static: ProcessStatic) -> None: ...
    def cell(self, cell: ProcessCell) -> None: ...


class CollectingSink:
    """Keeps what one process reports, for callers in this process (tests, benchmarks)."""

    def __init__(self, on_progress: Callable[[Progress], None] = lambda p: None) -> None:
        self.on_progress = on_progress
        self.statics: list[ProcessStatic] = []
        self.cells: list[ProcessCell] = []

    def progress(self, progress: Progress) -> None:
        self.on_progress(progress)

    def static(self, static: ProcessStatic) -> None:
        self.statics.append(static)

    def cell(self, cell: ProcessCell) -> None:
        self.cells.append(cell)


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
    end = measure_process(info, settings, config, ProcessPlan(), sink, model=model, tag=tag)
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
    report = ProgressReporter(sink, plan.process, len(measuring))
    with clock.phase("device"):
        ctx = open_device(config.device_class, settings.precision, config.memory_limit_mb)
    report("loading")
    with clock.phase("build"):
        val_set = open_accuracy_set(info, settings, config, plan)  # before any download: fail fast
        built = build_for_profile(info, settings, config, model, tag)
    report("flops")
    with clock.phase("static"):
        static = static_figures(info, settings, plan, ctx, built)
    with clock.phase("prepare"):
        prepared = prepare_model(built.model, settings, ctx, config.cache_dir)
    static.runtime = prepared.runtime.report
    sink.static(static)
    measure_cells(prepared, ctx, settings, config, plan.process, measuring, sink, report, clock)
    end = ProcessEnd(process=plan.process, wall_s=0.0)
    if val_set is not None:
        with clock.phase("accuracy"):
            end.top1, end.top5, end.accuracy_images = measure_accuracy(prepared, ctx, val_set, config, report)
    report("done", len(measuring))
    end.wall_s = time.perf_counter() - started
    end.phases = clock.seconds
    return end


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


@dataclass
class PreparedModel:
    """The model as the cells run it: the eager module on the device, in the profile's dtype and
    memory format, and the runtime that runs it (eager itself, or an export, a compile)."""

    model: nn.Module
    precision: str
    dtype: torch.dtype
    memory_format: torch.memory_format
    input_size: int
    runtime: Prepared = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.runtime is None:
            self.runtime = eager(self.model)

    def make_input(self, batch_size: int, device: torch.device) -> torch.Tensor:
        size = self.input_size
        x = torch.randn(batch_size, 3, size, size, device=device, dtype=self.dtype)
        return x.contiguous(memory_format=self.memory_format)


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
    file_bytes_fp32 = parameter_file_bytes(model.float())
    flops = plan.flops or count_model_flops(
        model, size, info.published_gmacs if size == info.input_size else None
    )
    dtype = DTYPES[settings.precision]
    return ProcessStatic(
        process=plan.process,
        params=count_params(model),
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


def prepare_model(
    model: nn.Module, settings: ProfileSettings, ctx: DeviceContext, cache: Path | None = None
) -> PreparedModel:
    """The module moved to the device in the profile's dtype, then prepared by its runtime (an
    export, a compile; eager as it is), whose outputs are checked against eager's on one input."""
    dtype = DTYPES[settings.precision]
    memory_format = torch.channels_last if settings.channels_last else torch.contiguous_format
    model = model.to(device=ctx.device, dtype=dtype, memory_format=memory_format)
    prepared = PreparedModel(model, settings.precision, dtype, memory_format, settings.input_size)
    runtime = runtime_for(settings.runtime, ctx.device_class)
    if settings.runtime == "eager":  # the reference itself: nothing to check it against
        prepared.runtime = runtime.prepare(model, settings, ctx, Path())
        return prepared
    with contextlib.ExitStack() as stack:
        if cache is None:
            cache = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dnnprof-runtime-")))
        prepared.runtime = runtime.prepare(model, settings, ctx, cache)
        x = prepared.make_input(CHECK_BATCH, ctx.device)
        with autocast_for(settings.precision, ctx.device):
            prepared.runtime.report.outputs = check_outputs(model, prepared.runtime, x, settings.precision)
    return prepared


def measure_cells(
    prepared: PreparedModel,
    ctx: DeviceContext,
    settings: ProfileSettings,
    config: ScenarioConfig,
    process: int,
    measuring: list[int],
    sink: Sink,
    report: ProgressReporter,
    clock: PhaseClock | None = None,
) -> None:
    """Each batch size in turn, handed to the sink the moment it is measured."""
    measurer = CellMeasurer(prepared, ctx, settings, config, process, clock)
    meter = (
        energy_meter(config.device_class, ctx.nvml_handle)
        if config.measure_energy
        else contextlib.nullcontext(NO_METER)
    )
    with torch.inference_mode(), autocast_for(prepared.precision, ctx.device), meter as energy:
        measurer.energy = energy
        for done, batch_size in enumerate(measuring):
            report("batch", done, batch_size=batch_size)
            sink.cell(measurer.measure(batch_size))
            ctx.release()


def measure_accuracy(
    prepared: PreparedModel, ctx: DeviceContext, val_set, config: ScenarioConfig, report: ProgressReporter
) -> tuple[float, float, int]:
    def accuracy_progress(done: int, of: int) -> None:
        report("accuracy", report.total, message=f"{done}/{of} images")

    if prepared.runtime.report.name == "eager":
        model = prepared.model
    else:  # the runtime's own outputs: the accuracy of the form that is deployed

        def model(images: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(prepared.runtime.logits(images)).to(images.device)

    with torch.inference_mode(), autocast_for(prepared.precision, ctx.device):
        return evaluate(
            model,
            val_set,
            ctx.device,
            dtype=prepared.dtype,
            memory_format=prepared.memory_format,
            workers=config.loader_workers,
            on_progress=accuracy_progress,
        )


def _load(info: ModelInfo, pretrained: bool, tag: str | None, input_size: int, offline: bool) -> nn.Module:
    if not pretrained:
        return build_model(info, tag=tag, input_size=input_size)
    try:
        return build_model(info, pretrained=True, tag=tag, input_size=input_size, offline=offline)
    except Exception as exc:
        raise AccuracyUnavailableError(
            f"could not load the pretrained weights of {info.name} "
            f"({info.weights_url or 'no published URL'}): {type(exc).__name__}: {exc}"
        ) from exc


class CellMeasurer:
    """One batch size in this process: the first call, the warm-up (its peak is the memory
    figure), the timed blocks."""

    def __init__(
        self,
        prepared: PreparedModel,
        ctx: DeviceContext,
        settings: ProfileSettings,
        config: ScenarioConfig,
        process: int,
        clock: PhaseClock | None = None,
    ) -> None:
        self.prepared = prepared
        self.ctx = ctx
        self.settings = settings
        self.config = config
        self.process = process
        self.clock = clock or PhaseClock()
        self.energy: EnergyMeter | None = None

    def measure(self, batch_size: int) -> ProcessCell:
        try:
            return self._measure(batch_size)
        except Exception as exc:  # noqa: BLE001 - one batch size's failure is its cell, not the profile's
            status = "oom" if is_out_of_memory(exc) else "error"
            message = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            if status == "error":
                message = f"{type(exc).__name__}: {message}"
            return ProcessCell(process=self.process, batch_size=batch_size, status=status, error=message)

    def _measure(self, batch_size: int) -> ProcessCell:
        """The input lives in this frame only, so it is gone when the caller releases memory."""
        ctx, prepared, size = self.ctx, self.prepared, self.prepared.input_size
        if ctx.cap is not None:
            ctx.cap.check_allocation(batch_size * 3 * size * size * prepared.dtype.itemsize)
        x = prepared.make_input(batch_size, ctx.device)
        forward = prepared.runtime.bind(x)
        with self.clock.phase("quiet_wait"):
            quiet = wait_for_quiet_host(self.config.quiet_wait_s)
        watching = ctx.cap.watching() if ctx.cap is not None else contextlib.nullcontext()
        with watching:
            with self.clock.phase("first_call"):  # cold: a compile compiles here, not in warm-up
                first_call_s = ctx.timer.time(forward, 1)[0]
            compiled_at_first_call = frames_compiled(prepared.runtime)
            with self.clock.phase("warm_up"):
                # After the first call's autotuning (its trial workspaces are not this batch's
                # memory), the peak over the warm-up runs: no forward of its own for memory.
                ctx.probe.prepare()
                warmup = warm_up(
                    forward,
                    ctx.timer,
                    self.config.warmup,
                    first_call_s,
                    timed_run_settles_from_s=self._timed_run_settles_from_s(),
                )
                memory = ctx.probe.read()
        if ctx.cap is not None:
            ctx.cap.check_peak(memory.total_bytes)
        memory.floor_bytes = ctx.floor
        cell = self._timed(batch_size, forward, first_call_s, warmup, memory)  # its phases its own
        if compiled_at_first_call is not None:
            cell.recompilations = frames_compiled(prepared.runtime) - compiled_at_first_call
        if cell.host is not None and self.config.quiet_wait_s > 0:
            cell.host.quiet_wait_s, cell.host.quiet_before = quiet.waited_s, quiet.quiet
        return cell

    def _timed(self, batch_size: int, forward, first_call_s: float, warmup, memory) -> ProcessCell:
        """The timed blocks, re-run while their spread stays over ``noisy_cv`` (the quietest kept).
        Where the warm-up left its window for the first timed run to complete (issue 29) and that
        run does not, the runs before the first window that settles were warm-up: dropped, and
        the block topped up; where none in the block settles, the whole block was warm-up, which
        goes on from its times closing its own window, and the block is timed again (not counted
        against ``max_attempts``)."""
        policy = self.config.warmup
        attempts: list[TimingAttempt] = []
        kept: TimedBlock | None = None
        while sum(a.settled for a in attempts) < max(1, self.config.max_attempts):
            started = time.perf_counter()
            block = self._block(batch_size, forward, warmup)
            attempts.append(block.attempt())
            warm_s = sum(block.head) if block.settled else time.perf_counter() - started
            self.clock.add("warm_up", warm_s)
            self.clock.add("timed", time.perf_counter() - started - warm_s)
            # The head counted as warm-up; no window is left open for a later block to settle.
            warmup = Warmup(warmup.runs + len(block.head), warmup.converged)
            if not block.settled:
                with self.clock.phase("warm_up"):
                    more = warm_up(forward, self.ctx.timer, policy, earlier=block.runs)  # a window of its own
                warmup = Warmup(warmup.runs + more.runs, more.converged)  # the block's runs counted above
                continue
            if kept is None or block.cv < kept.cv:
                kept = block
            if block.cv <= self.config.noisy_cv:
                break
        assert kept is not None
        return ProcessCell(
            process=self.process,
            batch_size=batch_size,
            status="ok",
            run_seconds=[float(t) for t in np.asarray(kept.runs)],
            warmup_runs=warmup.runs,
            warmup_converged=warmup.converged,
            attempts=attempts,
            host=kept.host,
            memory=memory,
            energy_j=kept.joules,
            energy_window_s=kept.seconds if kept.joules is not None else None,
            first_call_s=first_call_s,
        )

    def _block(self, batch_size: int, forward, warmup: Warmup) -> TimedBlock:
        """One block of timed runs, with the host's load and (where a meter reads it) the energy
        over the same window; the runs at its head that were still warm-up (see :meth:`_timed`)
        apart, and as many timed again. (A window is never left open where energy is read, so
        the joules are always those of the runs kept.)"""
        ctx, meter = self.ctx, self.energy
        min_seconds = self._min_timed_s()
        load = HostLoadMeter()
        window = meter.window() if meter is not None else None
        load.start()
        if window is not None:
            window.start()
        runs = ctx.timer.time_for(forward, self.settings.runs, min_seconds)
        head = settling_point(warmup, runs, self.config.warmup)
        if head is None:
            head, runs, settled = runs, runs, False
        else:
            head, runs, settled = runs[:head], runs[head:], True
            if head and (len(runs) < self.settings.runs or sum(runs) < min_seconds):
                runs += ctx.timer.time_for(
                    forward, max(1, self.settings.runs - len(runs)), max(0.0, min_seconds - sum(runs))
                )
        joules, seconds = window.stop() if window is not None else (None, 0.0)
        host = load.stop()
        per_image = aggregate.per_image_ms(runs, batch_size)
        mean = float(per_image.mean())
        cv = float(per_image.std(ddof=1) / mean) if per_image.size > 1 and mean > 0 else 0.0
        return TimedBlock(runs, mean, cv, host, joules, seconds, head, settled)

    def _min_timed_s(self) -> float:
        """The least time one block of timed runs lasts."""
        meter = self.energy
        if meter is not None and meter.available:
            return max(self.config.min_timed_s, MIN_WINDOW_S)  # an energy figure needs a long window
        return self.config.min_timed_s

    def _timed_run_settles_from_s(self) -> float | None:
        """Where the warm-up leaves its window for the first timed run to complete: runs of a
        tenth of a block or more (a block sized by its run count; in one sized by time a run is
        not worth a block's risk), and never where energy is read over the block."""
        if self.energy is not None and self.energy.available:
            return None
        return self._min_timed_s() / max(1, self.settings.runs)


class TimedBlock(NamedTuple):
    runs: list[float]
    mean_ms: float
    cv: float
    host: HostLoad | None
    joules: float | None
    seconds: float
    #: The runs at the block's head that were still warm-up (all of them where none settled).
    head: list[float]
    settled: bool

    def attempt(self) -> TimingAttempt:
        return TimingAttempt(
            runs=len(self.runs) if self.settled else 0,
            mean_ms=self.mean_ms,
            cv=self.cv,
            host=self.host,
            warm_up_runs=len(self.head),
            settled=self.settled,
        )
