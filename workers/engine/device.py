"""The device one measuring process measures on, opened once (step 1 of the scenario).

:class:`DeviceContext` is everything later steps read of it: the torch device, the memory probe
(NVML handle and UUID where there is one), the memory floor before the model, the cap that models
a smaller device, the timer and the CPU thread policy. A runtime other than eager PyTorch gets the
same context: it measures on the same device, under the same probe, floor and cap.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch

from dnnprof.contract import precision_refusal
from workers.engine.host import choose_threads
from workers.engine.memory import (
    MemoryProbe,
    ResidentCap,
    apply_memory_limit,
    nvml_baseline,
    probe_for,
    release,
)
from workers.engine.timing import Timer, timer_for

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "amp": torch.float32}


class PrecisionUnsupportedError(ValueError):
    """A precision this device has no kernels for (fp16 on a CPU)."""


@dataclass
class DeviceContext:
    device_class: str
    device: torch.device
    probe: MemoryProbe
    #: What the process holds before the model (its CUDA context included), in bytes.
    floor: int | None
    cap: ResidentCap | None
    timer: Timer
    #: How the CPU's threads were chosen (None on a GPU).
    threads_policy: str | None = None

    @property
    def nvml_handle(self) -> Any | None:
        return self.probe.handle

    @property
    def uuid(self) -> str | None:
        return self.probe.uuid

    def release(self) -> None:
        """Give back what the last batch size held (between cells)."""
        release(self.device)


def torch_device_for(device_class: str) -> torch.device:
    if device_class in ("cuda", "jetson"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device class {device_class!r} asked for, but torch sees no CUDA device")
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def check_precision(precision: str, device: torch.device) -> None:
    if refusal := precision_refusal(precision, "cpu" if device.type == "cpu" else "cuda"):
        raise PrecisionUnsupportedError(refusal)


def open_device(
    device_class: str, precision: str, memory_limit_mb: int = 0, cpu_threads: int | None = None
) -> DeviceContext:
    """The device, its threads (``cpu_threads``, else chosen) or its CUDA context, then the floor
    with that context held."""
    baseline = nvml_baseline(device_class)  # every GPU's use, before our CUDA context
    device = torch_device_for(device_class)
    check_precision(precision, device)
    threads_policy = None
    if device.type == "cpu":
        threads, threads_policy = choose_threads(cpu_threads)
        torch.set_num_threads(threads)
    else:
        torch.backends.cudnn.benchmark = True  # the paper's setting: autotuned during warm-up
        torch.zeros(1, device=device)  # the CUDA context now, so the floor below holds it
        release(device)
    probe = probe_for(device_class, device, baseline)
    floor = probe.floor()
    cap = apply_memory_limit(device, memory_limit_mb, floor)
    return DeviceContext(device_class, device, probe, floor, cap, timer_for(device), threads_policy)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision != "amp":
        return None
    return torch.float16 if device.type == "cuda" else torch.bfloat16


def autocast_for(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    dtype = autocast_dtype(precision, device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
