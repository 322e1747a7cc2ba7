"""Memory probes, one per device class. Each is reset before a batch size and read after it, so a
batch size's figure never carries what an earlier (larger) batch left behind."""

from __future__ import annotations

import contextlib
import gc
import os
import resource
from pathlib import Path

import torch

from dnnprof.contract import MemoryStats

PROC_SELF = Path("/proc/self")


def _status_kib(field: str, status_file: Path = PROC_SELF / "status") -> int | None:
    with contextlib.suppress(OSError):
        for line in status_file.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) for this process; False where not allowed."""
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


def release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


class CpuMemoryProbe:
    """Peak resident set of the measuring process while the batch ran."""

    def __init__(self) -> None:
        self.method = "peak_rss"

    def reset(self) -> None:
        release(torch.device("cpu"))
        if not reset_peak_rss():
            self.method = "peak_rss_lifetime"  # cannot reset: monotonic over the process

    def read(self) -> MemoryStats:
        return MemoryStats(total_bytes=peak_rss_bytes(), method=self.method)


class CudaMemoryProbe:
    """What the process holds on the GPU (NVML per process: context + caching allocator), as in
    the paper's figures, plus torch's own peaks."""

    method = "nvml_process"

    def __init__(self, device: torch.device, baseline_used_bytes: int | None = None) -> None:
        self.device = device
        self.baseline_used_bytes = baseline_used_bytes
        self._handle = None
        try:
            import pynvml

            pynvml.nvmlInit()
            index = device.index if device.index is not None else torch.cuda.current_device()
            self._handle = _nvml_handle_for_torch_index(pynvml, index)
        except Exception:  # noqa: BLE001 - no NVML (some containers): torch's figures alone
            self._handle = None

    def reset(self) -> None:
        release(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)

    def process_bytes(self) -> int | None:
        if self._handle is None:
            return None
        import pynvml

        pid = os.getpid()
        with contextlib.suppress(pynvml.NVMLError):
            for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(self._handle):
                if proc.pid == pid and proc.usedGpuMemory is not None:
                    return int(proc.usedGpuMemory)
        return None

    def device_used_bytes(self) -> int | None:
        if self._handle is None:
            return None
        import pynvml

        with contextlib.suppress(pynvml.NVMLError):
            return int(pynvml.nvmlDeviceGetMemoryInfo(self._handle).used)
        return None

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


def nvml_used_bytes_before_cuda(device_class: str) -> int | None:
    """The first visible GPU's used memory, read through NVML before this process touches CUDA
    (the baseline for :func:`process_total`); None without NVML or off CUDA."""
    if device_class != "cuda":
        return None
    try:
        import pynvml

        pynvml.nvmlInit()
        return int(pynvml.nvmlDeviceGetMemoryInfo(_nvml_handle_for_torch_index(pynvml, 0)).used)
    except Exception:  # noqa: BLE001 - no NVML: the probe falls back to torch's figures
        return None


class JetsonMemoryProbe(CudaMemoryProbe):
    """Tegra has no NVML and one memory for CPU and GPU: the process's share of it is its peak
    resident set plus what the CUDA caching allocator reserved (nvmap pages are not in RSS)."""

    method = "jetson_rss_plus_torch_reserved"

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._handle = None

    def reset(self) -> None:
        super().reset()
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


def _nvml_handle_for_torch_index(pynvml, index: int):
    """NVML enumerates all GPUs; torch only the visible ones. Match by UUID where possible."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        entries = [v.strip() for v in visible.split(",") if v.strip()]
        if index < len(entries):
            entry = entries[index]
            if entry.isdigit():
                return pynvml.nvmlDeviceGetHandleByIndex(int(entry))
            with contextlib.suppress(pynvml.NVMLError):
                return pynvml.nvmlDeviceGetHandleByUUID(entry)
    return pynvml.nvmlDeviceGetHandleByIndex(index)


def probe_for(device_class: str, device: torch.device, baseline_used_bytes: int | None = None):
    if device_class == "jetson":
        return JetsonMemoryProbe(device)
    if device.type == "cuda":
        return CudaMemoryProbe(device, baseline_used_bytes)
    return CpuMemoryProbe()


def apply_memory_limit(device: torch.device, limit_mb: int) -> None:
    """Cap what the measuring process may allocate, to find the batch sizes a smaller device
    could run (the paper's missing Jetson cells). CUDA: the caching allocator's fraction;
    CPU: an address-space cap of the current size plus ``limit_mb``."""
    if limit_mb <= 0:
        return
    limit = limit_mb * 1024 * 1024
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, limit / total), device)
    else:
        vm_kib = _status_kib("VmSize") or 0
        cap = vm_kib * 1024 + limit
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text or "failed to allocate" in text
    )
