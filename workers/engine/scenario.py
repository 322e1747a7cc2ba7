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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from dnnprof.contract import (
    FlopCount,
    ModelInfo,
    ProcessCell,
    ProcessEnd,
    ProcessStatic,
    ProfileResult,
    ProfileSettings,
    Progress,
    TimingAttempt,
    precision_refusal,
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
from workers.engine.energy import MIN_WINDOW_S, NO_METER, EnergyMeter, energy_meter
from workers.engine.fingerprint import fingerprint
from workers.engine.flops import count_model_flops
from workers.engine.host import HostLoadMeter, choose_threads
from workers.engine.memory import (
    ResidentCap,
    apply_memory_limit,
    is_out_of_memory,
    nvml_baseline,
    probe_for,
    release,
)
from workers.engine.models import build_model, count_params, deployed_form, parameter_file_bytes
from workers.engine.timing import Timer, WarmupPolicy, timer_for, warm_up

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "amp": torch.float32}


class PrecisionUnsupportedError(ValueError):
    """A precision this device has no kernels for (fp16 on a CPU)."""


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


def torch_device_for(device_class: str) -> torch.device:
    if device_class in ("cuda", "jetson"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device class {device_class!r} asked for, but torch sees no CUDA device")
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision != "amp":
        return None
    return torch.float16 if device.type == "cuda" else torch.bfloat16


def autocast_for(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    dtype = autocast_dtype(precision, device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def check_precision(precision: str, device: torch.device) -> None:
    if refusal := precision_refusal(precision, "cpu" if device.type == "cpu" else "cuda"):
        raise PrecisionUnsupportedError(refusal)


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
    started = time.perf_counter()
    measuring = [bs for bs in settings.batch_sizes if bs not in plan.skip]
    total = len(measuring)

    def progress(stage: str, done: int = 0, **kw) -> None:
        sink.progress(
            Progress(stage=stage, batches_done=done, batches_total=total, process=plan.process + 1, **kw)
        )

    baseline = nvml_baseline(config.device_class)  # every GPU's use, before our CUDA context
    device = torch_device_for(config.device_class)
    check_precision(settings.precision, device)
    threads_policy = None
    if device.type == "cpu":
        threads, threads_policy = choose_threads()
        torch.set_num_threads(threads)
    else:
        torch.backends.cudnn.benchmark = True  # the paper's setting: autotuned during warm-up
        torch.zeros(1, device=device)  # the CUDA context now, so the floor below holds it
        release(device)
    probe = probe_for(config.device_class, device, baseline)
    floor = probe.floor()
    cap = apply_memory_limit(device, config.memory_limit_mb, floor)

    progress("loading")
    val_set = None
    measure_accuracy = settings.accuracy and plan.accuracy
    pretrained = config.pretrained or settings.accuracy
    if measure_accuracy:  # before any download: fail fast when there is nothing to evaluate on
        val_set = evenly_spaced(
            open_val_set(
                config.imagenet_val, eval_transform(info, settings.input_size), config.imagenet_labels
            ),
            settings.accuracy_images,
        )
        check_head(info, val_set)
    if model is None:
        model = _load(info, pretrained, tag, settings.input_size, config.weights_offline)
    model.eval()
    form = "as built"
    if settings.reparameterize:
        model, _ = deployed_form(model)
        form = "deployed"
    params = count_params(model)
    file_bytes_fp32 = parameter_file_bytes(model.float())
    size = settings.input_size

    progress("flops")
    flops = plan.flops or count_model_flops(
        model, size, info.published_gmacs if size == info.input_size else None
    )

    dtype = DTYPES[settings.precision]
    memory_format = torch.channels_last if settings.channels_last else torch.contiguous_format
    model = model.to(device=device, dtype=dtype, memory_format=memory_format)
    file_bytes = parameter_file_bytes(model) if dtype != torch.float32 else file_bytes_fp32

    def make_input(batch_size: int) -> torch.Tensor:
        x = torch.randn(batch_size, 3, size, size, device=device, dtype=dtype)
        return x.contiguous(memory_format=memory_format)

    timer = timer_for(device)
    sink.static(
        ProcessStatic(
            process=plan.process,
            params=params,
            param_file_bytes_fp32=file_bytes_fp32,
            param_file_bytes=file_bytes,
            input_size=size,
            flops=flops,
            fingerprint=fingerprint(
                config.device_class,
                device,
                threads_policy=threads_policy,
                autocast_dtype=autocast_dtype(settings.precision, device),
                nvml_handle=getattr(probe, "handle", None),
                device_uuid=getattr(probe, "uuid", None),
            ),
            timing_method=timer.method,
            weights="pretrained" if pretrained else "random",
            memory_floor_bytes=floor,
            form=form,
        )
    )

    cell = CellMeasurer(model, make_input, settings, config, timer, probe, cap, floor, plan.process)
    with (
        torch.inference_mode(),
        autocast_for(settings.precision, device),
        (
            energy_meter(config.device_class, getattr(probe, "handle", None))
            if config.measure_energy
            else contextlib.nullcontext(NO_METER)
        ) as energy,
    ):
        cell.energy = energy
        for done, batch_size in enumerate(measuring):
            progress("batch", done, batch_size=batch_size)
            sink.cell(cell.measure(batch_size))
            release(device)

    end = ProcessEnd(process=plan.process, wall_s=0.0)
    if val_set is not None:

        def accuracy_progress(done: int, of: int) -> None:
            progress("accuracy", total, message=f"{done}/{of} images")

        with torch.inference_mode(), autocast_for(settings.precision, device):
            end.top1, end.top5, end.accuracy_images = evaluate(
                model,
                val_set,
                device,
                dtype=dtype,
                memory_format=memory_format,
                workers=config.loader_workers,
                on_progress=accuracy_progress,
            )
    progress("done", total)
    end.wall_s = time.perf_counter() - started
    return end


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
    """One batch size in this process: warm-up, the memory pass, the timed blocks."""

    def __init__(
        self,
        model: nn.Module,
        make_input: Callable[[int], torch.Tensor],
        settings: ProfileSettings,
        config: ScenarioConfig,
        timer: Timer,
        probe,
        cap: ResidentCap | None,
        floor: int | None,
        process: int,
    ) -> None:
        self.model = model
        self.make_input = make_input
        self.settings = settings
        self.config = config
        self.timer = timer
        self.probe = probe
        self.cap = cap
        self.floor = floor
        self.process = process
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
        size = self.settings.input_size
        if self.cap is not None:
            self.cap.check_allocation(batch_size * 3 * size * size * DTYPES[self.settings.precision].itemsize)
        x = self.make_input(batch_size)

        def forward() -> object:
            return self.model(x)

        watching = self.cap.watching() if self.cap is not None else contextlib.nullcontext()
        with watching:
            warmup = warm_up(forward, self.timer, self.config.warmup)
            self.probe.prepare()  # after autotuning: its trial workspaces are not this batch's memory
            forward()
            memory = self.probe.read()
        if self.cap is not None:
            self.cap.check_peak(memory.total_bytes)
        memory.floor_bytes = self.floor

        meter = self.energy
        min_seconds = self.config.min_timed_s
        if meter is not None and meter.available:
            min_seconds = max(min_seconds, MIN_WINDOW_S)  # an energy figure needs a long window
        attempts: list[TimingAttempt] = []
        kept = None
        for _ in range(max(1, self.config.max_attempts)):
            load = HostLoadMeter()
            window = meter.window() if meter is not None else None
            load.start()
            if window is not None:
                window.start()
            runs = self.timer.time_for(forward, self.settings.runs, min_seconds)
            joules, seconds = window.stop() if window is not None else (None, 0.0)
            host = load.stop()
            per_image = aggregate.per_image_ms(runs, batch_size)
            mean = float(per_image.mean())
            cv = float(per_image.std(ddof=1) / mean) if per_image.size > 1 and mean > 0 else 0.0
            attempts.append(TimingAttempt(runs=len(runs), mean_ms=mean, cv=cv, host=host))
            if kept is None or cv < kept[1]:
                kept = (runs, cv, host, joules, seconds)
            if cv <= self.config.noisy_cv:
                break
        runs, _, host, joules, seconds = kept  # type: ignore[misc]
        return ProcessCell(
            process=self.process,
            batch_size=batch_size,
            status="ok",
            run_seconds=[float(t) for t in np.asarray(runs)],
            warmup_runs=warmup.runs,
            warmup_converged=warmup.converged,
            attempts=attempts,
            host=host,
            memory=memory,
            energy_j=joules,
            energy_window_s=seconds if joules is not None else None,
        )
