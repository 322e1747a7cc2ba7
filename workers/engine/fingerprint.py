"""What a result was measured on: device, drivers, libraries, CPU, and for Jetson the L4T release
and power mode. Fields a platform does not report stay None rather than being guessed."""

from __future__ import annotations

import contextlib
import os
import platform
import socket
from importlib import metadata

import torch

from dnnprof.contract import DeviceFingerprint, GpuClocks
from workers import cpuinfo, nvml
from workers.devices import cpu_model, jetson_power_mode, l4t_release
from workers.engine.host import usable_cpus
from workers.launch import PROCESS_START_ENV


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _nvml_driver() -> str | None:
    module = nvml.load()
    if module is None:
        return None
    with contextlib.suppress(Exception):
        version = module.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else version
    return None


def gpu_clocks(handle) -> GpuClocks | None:
    """SM and memory clocks now, the SM's maximum, and NVML's reasons for holding clocks down."""
    module = nvml.load()
    if module is None or handle is None:
        return None
    clocks = GpuClocks()
    with contextlib.suppress(Exception):
        clocks.sm_mhz = int(module.nvmlDeviceGetClockInfo(handle, module.NVML_CLOCK_SM))
    with contextlib.suppress(Exception):
        clocks.memory_mhz = int(module.nvmlDeviceGetClockInfo(handle, module.NVML_CLOCK_MEM))
    with contextlib.suppress(Exception):
        clocks.max_sm_mhz = int(module.nvmlDeviceGetMaxClockInfo(handle, module.NVML_CLOCK_SM))
    with contextlib.suppress(Exception):
        reasons = getattr(module, "nvmlDeviceGetCurrentClocksEventReasons", None) or (
            module.nvmlDeviceGetCurrentClocksThrottleReasons
        )
        clocks.throttle_reasons = nvml.throttle_reasons(int(reasons(handle)))
    return clocks


def fingerprint(
    device_class: str,
    device: torch.device,
    *,
    threads_policy: str | None = None,
    autocast_dtype: torch.dtype | None = None,
    nvml_handle=None,
    device_uuid: str | None = None,
) -> DeviceFingerprint:
    fp = DeviceFingerprint(
        device_class=device_class,  # type: ignore[arg-type]
        device_name=cpu_model() or platform.machine(),
        torch_version=str(torch.__version__),
        torchvision_version=_version("torchvision"),
        timm_version=_version("timm"),
        python_version=platform.python_version(),
        cpu_model=cpu_model(),
        cpu_count=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        hostname=socket.gethostname(),
        cpu_affinity=usable_cpus(),
        threads_policy=threads_policy,
        float32_matmul_precision=torch.get_float32_matmul_precision(),
        autocast_dtype=str(autocast_dtype).removeprefix("torch.") if autocast_dtype is not None else None,
        process_start=os.environ.get(PROCESS_START_ENV) or None,
        cpu_arch=cpuinfo.machine(),
        cpu_emulation=cpuinfo.emulation(),
    )
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        fp.device_name = props.name
        fp.device_memory_bytes = int(props.total_memory)
        fp.compute_capability = f"{props.major}.{props.minor}"
        fp.cuda_version = str(torch.version.cuda) if torch.version.cuda else None
        cudnn = torch.backends.cudnn.version()
        fp.cudnn_version = str(cudnn) if cudnn is not None else None
        fp.cudnn_benchmark = bool(torch.backends.cudnn.benchmark)
        fp.cudnn_allow_tf32 = bool(torch.backends.cudnn.allow_tf32)
        fp.matmul_allow_tf32 = bool(torch.backends.cuda.matmul.allow_tf32)
        fp.driver_version = _nvml_driver()
        fp.device_uuid = device_uuid
        fp.gpu_clocks = gpu_clocks(nvml_handle)
    else:
        with contextlib.suppress(OSError, ValueError):
            fp.device_memory_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if device_class == "jetson":
        fp.l4t_release = l4t_release()
        fp.jetson_power_mode = jetson_power_mode()
    return fp
