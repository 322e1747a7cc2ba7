"""Memory probes, one per device class, and the cap that models a smaller device.

Each batch size's figure is the peak over its warm-up runs, reset after its first call: on CUDA,
synchronise, free the cache and reset the peaks once the first call has autotuned (cuDNN's trials
run at a shape's first call, with the cache empty), so they are not taken for the batch's memory;
on a CPU, return freed heap to the kernel and reset the peak-RSS mark, so no batch size inherits
an earlier one's high-water mark. No forward runs for the memory alone (issue 29).
What the process held before the model was built is read once as the floor (the CUDA context; the
libraries on a CPU).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import resource
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import torch

from dnnprof.config import MIB
from dnnprof.contract import MemoryStats
from workers import nvml

PROC_SELF = Path("/proc/self")


def _status_kib(field: str, status_file: Path = PROC_SELF / "status") -> int | None:
    with contextlib.suppress(OSError):
        for line in status_file.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def rss_bytes() -> int:
    """Resident set now (``statm``: one read, cheap enough to poll)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int((PROC_SELF / "statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return (_status_kib("VmRSS") or 0) * 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS; False where not allowed."""
    try:
        (PROC_SELF / "clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    kib = _status_kib("VmHWM")
    if kib is None:  # no /proc: ru_maxrss is the life-time peak, in KiB on Linux
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib * 1024


def trim_heap() -> None:
    """Give freed heap pages back to the kernel (glibc keeps them after large frees, so the RSS
    of a smaller batch size after a larger one would still show the larger one's)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
    else:
        trim_heap()


class MemoryProbe(Protocol):
    """What a measuring process reads of its device's memory: the floor before the model, then per
    batch size a reset (``prepare``) and the reading after one pass. ``handle`` and ``uuid`` name
    the NVML device where there is one (the fingerprint and the energy meter read it)."""

    uuid: str | None

    @property
    def handle(self) -> Any | None: ...
    def floor(self) -> int | None: ...
    def prepare(self) -> None: ...
    def read(self) -> MemoryStats: ...


class CpuMemoryProbe:
    """This batch size's own peak resident set (the mark reset before its memory pass)."""

    uuid = None

    def __init__(self) -> None:
        self.method = "peak_rss"

    @property
    def handle(self) -> Any | None:
        return None

    def floor(self) -> int | None:
        """What the process holds with its freed heap returned: without the trim, heap an
        earlier user of the process freed but glibc kept would count as floor, and the floor
        could exceed a batch's own peak (read after its own trim)."""
        release(torch.device("cpu"))
        return rss_bytes()

    def prepare(self) -> None:
        release(torch.device("cpu"))
        if not reset_peak_rss():
            self.method = "peak_rss_lifetime"  # cannot reset: monotonic over the process

    def read(self) -> MemoryStats:
        return MemoryStats(total_bytes=peak_rss_bytes(), method=self.method)


class CudaMemoryProbe:
    """What the process holds on the GPU (NVML per process: context + caching allocator), as in
    the paper's figures, plus torch's own peaks."""

    def __init__(self, device: torch.device, baseline_by_uuid: dict[str, int] | None = None) -> None:
        self.device = device
        self._nvml = nvml.load()
        self.uuid = torch_device_uuid(device)
        self._handle = nvml.handle_by_uuid(self._nvml, self.uuid) if self._nvml and self.uuid else None
        self.baseline_used_bytes = (baseline_by_uuid or {}).get(self.uuid or "")

    @property
    def handle(self) -> Any | None:
        return self._handle

    def process_bytes(self) -> int | None:
        if self._handle is None:
            return None
        pid = os.getpid()
        with contextlib.suppress(Exception):
            for proc in self._nvml.nvmlDeviceGetComputeRunningProcesses(self._handle):
                if proc.pid == pid and proc.usedGpuMemory is not None:
                    return int(proc.usedGpuMemory)
        return None

    def device_used_bytes(self) -> int | None:
        if self._handle is None:
            return None
        with contextlib.suppress(Exception):
            return int(self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used)
        return None

    def floor(self) -> int | None:
        """The CUDA context alone (created by now, nothing of the model allocated yet); None
        without NVML, which alone sees the context."""
        torch.cuda.synchronize(self.device)
        total, method = process_total(
            self.process_bytes(), self.device_used_bytes(), self.baseline_used_bytes, 0
        )
        return total if method != "torch_peak_reserved" else None

    def prepare(self) -> None:
        release(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)

    def read(self) -> MemoryStats:
        torch.cuda.synchronize(self.device)
        reserved = int(torch.cuda.max_memory_reserved(self.device))
        total, method = process_total(
            self.process_bytes(), self.device_used_bytes(), self.baseline_used_bytes, reserved
        )
        return MemoryStats(
            total_bytes=total,
            method=method,
            torch_peak_allocated_bytes=int(torch.cuda.max_memory_allocated(self.device)),
            torch_peak_reserved_bytes=reserved,
        )


def torch_device_uuid(device: torch.device) -> str | None:
    """The UUID CUDA reports for ``device`` (normalised as NVML's, without 'GPU-')."""
    with contextlib.suppress(Exception):
        uuid = torch.cuda.get_device_properties(device).uuid
        return nvml.normalise_uuid(str(uuid))
    return None


def process_total(
    per_process: int | None, device_used: int | None, baseline_used: int | None, torch_reserved: int
) -> tuple[int, str]:
    """The process's device memory, context included, and how it was read.

    NVML's per-process figure first. In a container NVML lists host PIDs, so our own PID is not
    among them: then the device's used memory over what it used before this process created its
    CUDA context (exact while the device lock keeps other jobs off the GPU). Without NVML, torch's
    peak reserved, which leaves out the context, and says so.
    """
    if per_process is not None:
        return per_process, "nvml_process"
    if device_used is not None and baseline_used is not None and device_used > baseline_used:
        return max(device_used - baseline_used, torch_reserved), "nvml_device_delta"
    return torch_reserved, "torch_peak_reserved"


def nvml_baseline(device_class: str) -> dict[str, int]:
    """Every GPU's used memory by UUID, read before this process touches CUDA (the baseline for
    :func:`process_total`, picked by the UUID torch reports once the context exists)."""
    if device_class != "cuda":
        return {}
    handle = nvml.load()
    return nvml.used_bytes_by_uuid(handle) if handle is not None else {}


class JetsonMemoryProbe(CudaMemoryProbe):
    """Tegra has no NVML and one memory for CPU and GPU: the process's share of it is this batch
    size's peak resident set plus what the CUDA caching allocator reserved (nvmap pages are not in
    RSS)."""

    method = "jetson_rss_plus_torch_reserved"

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._nvml = None
        self._handle = None
        self.uuid = None
        self.baseline_used_bytes = None

    def floor(self) -> int | None:
        torch.cuda.synchronize(self.device)
        return rss_bytes() + int(torch.cuda.memory_reserved(self.device))

    def prepare(self) -> None:
        super().prepare()
        trim_heap()
        reset_peak_rss()

    def read(self) -> MemoryStats:
        torch.cuda.synchronize(self.device)
        reserved = int(torch.cuda.max_memory_reserved(self.device))
        return MemoryStats(
            total_bytes=peak_rss_bytes() + reserved,
            method=self.method,
            torch_peak_allocated_bytes=int(torch.cuda.max_memory_allocated(self.device)),
            torch_peak_reserved_bytes=reserved,
        )


def probe_for(
    device_class: str, device: torch.device, baseline_by_uuid: dict[str, int] | None = None
) -> MemoryProbe:
    if device_class == "jetson":
        return JetsonMemoryProbe(device)
    if device.type == "cuda":
        return CudaMemoryProbe(device, baseline_by_uuid)
    return CpuMemoryProbe()


# -- the cap that models a smaller device (DNNPROF_MEMORY_LIMIT_MB) ------------------------------


class MemoryCapExceeded(MemoryError):
    """The batch needs more than DNNPROF_MEMORY_LIMIT_MB: on the modelled device it would not fit."""


class ResidentCap:
    """Caps the measuring process's resident memory on a CPU, the figure its memory cells report.

    An address-space limit (RLIMIT_AS) is the wrong tool: glibc arenas and thread stacks reserve
    address space they never touch. Instead a watcher thread polls the resident set while a batch
    size first runs (warm-up and the memory pass) and interrupts the main thread once it passes the
    cap; the pass's own peak is checked afterwards as well, and an input that alone would pass the
    cap is refused before it is allocated.
    """

    def __init__(self, limit_bytes: int, poll_s: float = 0.002) -> None:
        self.limit_bytes = limit_bytes
        self.poll_s = poll_s

    def _error(self, need_bytes: int, what: str) -> MemoryCapExceeded:
        return MemoryCapExceeded(
            f"cannot allocate within the memory cap: {what} {need_bytes / MIB:.0f} MiB, over "
            f"DNNPROF_MEMORY_LIMIT_MB={self.limit_bytes // MIB}"
        )

    def check_allocation(self, extra_bytes: int) -> None:
        if rss_bytes() + extra_bytes > self.limit_bytes:
            raise self._error(rss_bytes() + extra_bytes, "resident memory would reach")

    def check_peak(self, peak_bytes: int | None) -> None:
        if peak_bytes is not None and peak_bytes > self.limit_bytes:
            raise self._error(peak_bytes, "resident memory reached")

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # signals reach the main thread only: the peak check after the pass still holds
            return
        over: list[int] = []

        def on_signal(signum, frame) -> None:
            raise self._error(over[0] if over else self.limit_bytes, "resident memory reached")

        previous = signal.signal(signal.SIGUSR1, on_signal)
        stop = threading.Event()
        main = threading.main_thread().ident

        def watch() -> None:
            while not stop.wait(self.poll_s):
                rss = rss_bytes()
                if rss > self.limit_bytes:
                    over.append(rss)
                    signal.pthread_kill(main, signal.SIGUSR1)
                    return

        watcher = threading.Thread(target=watch, name="dnnprof-memory-cap", daemon=True)
        watcher.start()
        try:
            yield
        finally:
            stop.set()
            watcher.join()
            signal.signal(signal.SIGUSR1, previous)


def apply_memory_limit(device: torch.device, limit_mb: int, floor_bytes: int | None) -> ResidentCap | None:
    """Model a device of ``limit_mb`` MB (the paper's missing Jetson cells): on CUDA the caching
    allocator may use the limit less the CUDA context already held; on a CPU the resident set is
    capped (see :class:`ResidentCap`)."""
    if limit_mb <= 0:
        return None
    limit = limit_mb * MIB
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        usable = max(0, limit - (floor_bytes or 0))
        torch.cuda.set_per_process_memory_fraction(min(1.0, usable / total), device)
        return None
    return ResidentCap(limit)


#: Allocation failures of CUDA's libraries: out of memory as well, though not torch's OOM type.
_OOM_MARKERS = (
    "out of memory",
    "can't allocate memory",
    "failed to allocate",
    "cublas_status_alloc_failed",
    "cudnn_status_alloc_failed",
    "cudnn_status_not_enough_workspace",
    "cufft_alloc_failed",
)


def is_out_of_memory(exc: BaseException) -> bool:
    oom_types: tuple[type[BaseException], ...] = (torch.cuda.OutOfMemoryError, MemoryError)
    if isinstance(exc, oom_types):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(marker in text for marker in _OOM_MARKERS)
