"""What a result was measured on: device, drivers, libraries, CPU, and for Jetson the L4T release
and power mode. Fields a platform does not report stay None rather than being guessed."""

from __future__ import annotations

import contextlib
import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path

import torch

from dnnprof.contract import DeviceFingerprint
from workers.devices import TEGRA_RELEASE, cpu_model


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def l4t_release(release_file: Path = TEGRA_RELEASE) -> str | None:
    """'# R36 (release), REVISION: 3.0, ...' -> 'R36.3.0'."""
    with contextlib.suppress(OSError):
        first = release_file.read_text(errors="ignore").splitlines()[0]
        major = first.split("(")[0].replace("#", "").strip()
        revision = first.split("REVISION:")[1].split(",")[0].strip()
        return f"{major}.{revision}"
    return None


def jetson_power_mode(nvpmodel_output: str | None = None) -> str | None:
    """From ``nvpmodel -q``: 'NV Power Mode: MAXN' -> 'MAXN'."""
    if nvpmodel_output is None:
        try:
            nvpmodel_output = subprocess.run(
                ["nvpmodel", "-q"], capture_output=True, text=True, timeout=5, check=False
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return None
    for line in nvpmodel_output.splitlines():
        if "power mode" in line.lower() and ":" in line:
            return line.split(":", 1)[1].strip()
    return None


def _nvml_driver() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else version
    except Exception:  # noqa: BLE001 - no NVML here: the field stays None
        return None


def fingerprint(device_class: str, device: torch.device) -> DeviceFingerprint:
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
    )
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        fp.device_name = props.name
        fp.device_memory_bytes = int(props.total_memory)
        fp.compute_capability = f"{props.major}.{props.minor}"
        fp.cuda_version = str(torch.version.cuda) if torch.version.cuda else None
        cudnn = torch.backends.cudnn.version()
        fp.cudnn_version = str(cudnn) if cudnn is not None else None
        fp.driver_version = _nvml_driver()
    else:
        with contextlib.suppress(OSError, ValueError):
            fp.device_memory_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if device_class == "jetson":
        fp.l4t_release = l4t_release()
        fp.jetson_power_mode = jetson_power_mode()
    return fp
