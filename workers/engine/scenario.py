"""The paper's scenario for one model: parameters, parameter-file size and FLOPs once, then per
batch size the timed passes and the memory they took. An out-of-memory batch size is recorded
as ``oom`` and the profile goes on, as the paper's missing cells do."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from dnnprof.contract import (
    BatchMeasurement,
    ModelInfo,
    ProfileResult,
    ProfileSettings,
    Progress,
)
from workers.engine.accuracy import (
    AccuracyUnavailableError,
    check_head,
    eval_transform,
    evaluate,
    evenly_spaced,
    open_val_set,
)
from workers.engine.fingerprint import fingerprint
from workers.engine.memory import (
    apply_memory_limit,
    is_out_of_memory,
    nvml_used_bytes_before_cuda,
    probe_for,
    release,
)
from workers.engine.models import build_model, count_params, parameter_file_bytes
from workers.engine.peaks import peak_flops
from workers.engine.timing import Timer, WarmupPolicy, latency_stats, timer_for, warm_up

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "amp": torch.float32}


@dataclass
class ScenarioConfig:
    device_class: str
    memory_limit_mb: int = 0
    warmup: WarmupPolicy = field(default_factory=WarmupPolicy)
    noisy_cv: float = 0.1
    pretrained: bool = False
    imagenet_val: Path | None = None
    imagenet_labels: Path | None = None
    loader_workers: int = 2


def torch_device_for(device_class: str) -> torch.device:
    if device_class in ("cuda", "jetson"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device class {device_class!r} asked for, but torch sees no CUDA device")
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def count_flops(model: nn.Module, example: torch.Tensor) -> int:
    """FLOPs of one forward pass (one multiply-add = 2 FLOPs), by torch's own counter."""
    counter = FlopCounterMode(display=False)
    with counter:
        model(example)
    return int(counter.get_total_flops())


def autocast_for(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    if precision != "amp":
        return contextlib.nullcontext()
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def energy_meter(device_class: str, device: torch.device) -> Iterator[Callable[[], float | None]]:
    """Yields a function returning the joules consumed so far: NVML's energy counter on GPUs that
    have one, the integrated INA3221 input rail on a Jetson; None where neither exists."""
    if device_class == "jetson":
        from workers.telemetry import JetsonSysfs, PowerIntegrator

        sysfs = JetsonSysfs()
        if sysfs.input_power_w() is None:
            yield lambda: None
            return
        with PowerIntegrator(sysfs.input_power_w) as integrator:
            yield integrator.read
        return
    if device.type != "cuda":
        yield lambda: None
        return
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except Exception:  # noqa: BLE001 - no NVML or no energy counter on this GPU
        yield lambda: None
        return

    def read() -> float | None:
        try:
            return pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1000.0
        except Exception:  # noqa: BLE001 - a counter that stops answering reads as absent
            return None

    yield read


def run_profile(
    info: ModelInfo,
    settings: ProfileSettings,
    config: ScenarioConfig,
    *,
    on_progress: Callable[[Progress], None] = lambda p: None,
    model: nn.Module | None = None,
    tag: str | None = None,
) -> ProfileResult:
    started = time.perf_counter()
    baseline_used = nvml_used_bytes_before_cuda(config.device_class)  # before our CUDA context
    device = torch_device_for(config.device_class)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    apply_memory_limit(device, config.memory_limit_mb)
    total = len(settings.batch_sizes)

    on_progress(Progress(stage="loading", batches_total=total))
    val_set = None
    pretrained = config.pretrained or settings.accuracy
    if settings.accuracy:  # before any download: fail fast when there is nothing to evaluate on
        val_set = evenly_spaced(
            open_val_set(
                config.imagenet_val, eval_transform(info, settings.input_size), config.imagenet_labels
            ),
            settings.accuracy_images,
        )
        check_head(info, val_set)
    if model is None:
        model = _load(info, pretrained, tag)
    model.eval()
    params = count_params(model)
    file_bytes_fp32 = parameter_file_bytes(model.float())

    dtype = DTYPES[settings.precision]
    memory_format = torch.channels_last if settings.channels_last else torch.contiguous_format
    model = model.to(device=device, dtype=dtype, memory_format=memory_format)
    file_bytes = parameter_file_bytes(model) if dtype != torch.float32 else file_bytes_fp32
    size = settings.input_size

    def make_input(batch_size: int) -> torch.Tensor:
        x = torch.randn(batch_size, 3, size, size, device=device, dtype=dtype)
        return x.contiguous(memory_format=memory_format)

    timer: Timer = timer_for(device)
    peak = (
        peak_flops(torch.cuda.get_device_name(device), settings.precision) if device.type == "cuda" else None
    )
    probe = probe_for(config.device_class, device, baseline_used)
    batches: list[BatchMeasurement] = []
    timed_s = 0.0

    with (
        torch.inference_mode(),
        autocast_for(settings.precision, device),
        energy_meter(config.device_class, device) as energy,
    ):
        on_progress(Progress(stage="flops", batches_total=total))
        flops = count_flops(model, make_input(1))

        for done, batch_size in enumerate(settings.batch_sizes):
            on_progress(
                Progress(stage="batch", batch_size=batch_size, batches_done=done, batches_total=total)
            )
            measurement, seconds = _measure_batch(
                model, make_input, batch_size, settings.runs, timer, probe, energy, config
            )
            release(device)
            timed_s += seconds
            if measurement.latency is not None and flops:
                measurement.achieved_flops_per_s = flops * measurement.latency.images_per_s
                if peak:
                    measurement.peak_flops_share = measurement.achieved_flops_per_s / peak
            batches.append(measurement)

    top1 = top5 = images = None
    if val_set is not None:

        def accuracy_progress(done: int, of: int) -> None:
            on_progress(
                Progress(
                    stage="accuracy", batches_done=total, batches_total=total, message=f"{done}/{of} images"
                )
            )

        with torch.inference_mode(), autocast_for(settings.precision, device):
            top1, top5, images = evaluate(
                model,
                val_set,
                device,
                dtype=dtype,
                memory_format=memory_format,
                workers=config.loader_workers,
                on_progress=accuracy_progress,
            )

    on_progress(Progress(stage="done", batches_done=total, batches_total=total))
    return ProfileResult(
        model=info,
        settings=settings,
        params=params,
        param_file_bytes_fp32=file_bytes_fp32,
        param_file_bytes=file_bytes,
        flops=flops,
        input_size=size,
        batches=batches,
        fingerprint=fingerprint(config.device_class, device),
        timing_method=timer.method,
        wall_s=time.perf_counter() - started,
        timed_s=timed_s,
        weights="pretrained" if pretrained else "random",
        top1=top1,
        top5=top5,
        accuracy_images=images,
    )


def _load(info: ModelInfo, pretrained: bool, tag: str | None) -> nn.Module:
    if not pretrained:
        return build_model(info, tag=tag)
    try:
        return build_model(info, pretrained=True, tag=tag)
    except Exception as exc:
        raise AccuracyUnavailableError(
            f"could not load the pretrained weights of {info.name} "
            f"({info.weights_url or 'no published URL'}): {type(exc).__name__}: {exc}"
        ) from exc


def _measure_batch(
    model: nn.Module,
    make_input: Callable[[int], torch.Tensor],
    batch_size: int,
    runs: int,
    timer: Timer,
    probe,
    energy: Callable[[], float | None],
    config: ScenarioConfig,
) -> tuple[BatchMeasurement, float]:
    probe.reset()
    try:
        warmup_runs, run_seconds, joules, memory = _timed_passes(
            model, make_input(batch_size), runs, timer, probe, energy, config
        )
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        message = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        return BatchMeasurement(batch_size=batch_size, status="oom", error=message), 0.0
    stats = latency_stats(run_seconds, batch_size, warmup_runs, config.noisy_cv)
    measurement = BatchMeasurement(batch_size=batch_size, status="ok", latency=stats, memory=memory)
    if joules is not None and joules > 0:
        measurement.energy_per_image_j = joules / (runs * batch_size)
    return measurement, sum(run_seconds)


def _timed_passes(model, x, runs, timer, probe, energy, config):
    """Warm-up, the timed runs and the memory they took; the input dies with this frame."""

    def forward() -> object:
        return model(x)

    warmup_runs = warm_up(forward, timer, config.warmup)
    joules_before = energy()
    run_seconds = timer.time(forward, runs)
    joules_after = energy()
    memory = probe.read()
    joules = joules_after - joules_before if joules_before is not None and joules_after is not None else None
    return warmup_runs, run_seconds, joules, memory
