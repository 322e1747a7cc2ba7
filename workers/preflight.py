"""What a worker checks before it takes a job, so that a deployment that cannot measure fails at
start (a non-zero exit, saying why) instead of failing every job it is given.

- The data directory (outcome files, the spool, run files) must be writable by this user: the
  images run as uid 10001 with no home, so a default under ``~`` cannot be created there.
- A ``cuda`` or ``jetson`` worker needs torch to see a CUDA device, and a driver new enough for the CUDA line
  torch was built for. torch is asked in a fresh interpreter: CUDA must not start in the parent,
  whose pool processes are forked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from dnnprof.config import MIB

#: The oldest Linux driver of each CUDA major version's line (minor version compatibility: any
#: CUDA 12.x runtime runs on >= 525.60.13, any 13.x on >= 580), from NVIDIA's CUDA Toolkit release
#: notes, table "CUDA Toolkit and Minimum Required Driver Version for CUDA Minor Version
#: Compatibility".
MINIMUM_DRIVER = {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"}

GPU_HINT = (
    "pass the GPU into the container (docker run --gpus all; podman run --device nvidia.com/gpu=all "
    "with the NVIDIA Container Toolkit's CDI spec; compose: deploy.resources.reservations.devices; "
    "Kubernetes: resources.limits nvidia.com/gpu with the NVIDIA device plugin), keep "
    "NVIDIA_VISIBLE_DEVICES and CUDA_VISIBLE_DEVICES naming a GPU, and check the host's driver "
    "with nvidia-smi; on a host without a GPU run it as a CPU worker (--device cpu, or "
    "DNNPROF_WORKER_DEVICE=cpu)"
)
JETSON_HINT = (
    "run the container with the NVIDIA runtime (docker run --runtime nvidia; compose: runtime: nvidia) "
    "and, as a non-root user, in the video group (group_add: [video]), on an L4T base image whose "
    "torch is NVIDIA's Jetson build"
)


def data_disk_short(data_dir: Path, min_free_mb: int) -> str | None:
    """Why the data disk cannot take a measurement now (None: it can). A measuring process writes
    its outcome, its log and any export there; one that ran out of space died mid-write with a
    misleading reason ("Input data was truncated", "exit code 1")."""
    import shutil

    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    free_mb = shutil.disk_usage(data_dir).free // MIB
    if free_mb >= min_free_mb:
        return None
    return (
        f"no space left on the data disk: {free_mb} MB free under {data_dir}, a measurement needs "
        f"{min_free_mb} MB (DNNPROF_MIN_FREE_MB)"
    )


class WorkerStartError(RuntimeError):
    """The worker cannot measure here; the message says why and what to change."""


def check_data_dir(data_dir: Path) -> None:
    """Create the data directory and the folders the worker writes (its run files; the spool, the
    one place a measurement waits while Redis is away) and write a file in each, as it will."""
    from dnnprof.process import run_dir, spool_dir

    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for folder in (data_dir, run_dir(data_dir), spool_dir(data_dir)):
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
                pass
    except OSError as exc:
        raise WorkerStartError(
            f"the data directory {data_dir} is not writable by uid {os.getuid()} ({exc.strerror}: "
            f"{exc.filename or data_dir}); set DNNPROF_DATA_DIR to a directory this user owns "
            "(the images use the volume /data)"
        ) from exc


def cuda_line(version: str | None) -> int | None:
    """'13.0' -> 13; None (a CPU build of torch) -> None."""
    if not version:
        return None
    try:
        return int(version.split(".")[0])
    except ValueError:
        return None


def driver_too_old(driver_cuda: int | None, torch_cuda: str | None, driver: str | None) -> str | None:
    """Why the driver cannot run torch's CUDA runtime, or None. ``driver_cuda`` is NVML's
    ``nvmlSystemGetCudaDriverVersion`` (12060 for CUDA 12.6), ``torch_cuda`` ``torch.version.cuda``."""
    wanted = cuda_line(torch_cuda)
    if driver_cuda is None or wanted is None:
        return None
    supported = driver_cuda // 1000
    if supported >= wanted:
        return None
    minimum = MINIMUM_DRIVER.get(wanted)
    needs = f"a driver >= {minimum}" if minimum else f"a driver for CUDA {wanted}"
    return (
        f"the NVIDIA driver {driver or '?'} supports CUDA up to {supported}.{driver_cuda % 1000 // 10}, "
        f"but this torch is built for CUDA {torch_cuda}: it needs {needs} (see deploy/README.md)"
    )


_TORCH_PROBE = """
import json, warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import torch
    available = torch.cuda.is_available()
    count = torch.cuda.device_count() if available else 0
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
print(json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda, "available": available,
                  "count": count, "cudnn": cudnn, "warnings": [str(w.message) for w in caught]}))
"""


def probe_torch_cuda(timeout_s: float = 300.0) -> dict:
    """What torch sees of CUDA, asked in a fresh interpreter (no CUDA in this process)."""
    out = subprocess.run(
        [sys.executable, "-c", _TORCH_PROBE], capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if out.returncode != 0:
        raise WorkerStartError(f"importing torch failed: {out.stderr.strip()[-1000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def nvml_driver() -> tuple[str | None, int | None]:
    """(driver version, the CUDA version it supports) from NVML, or Nones without a driver."""
    from workers import nvml

    module = nvml.load()
    if module is None:
        return None, None
    try:
        driver = module.nvmlSystemGetDriverVersion()
        cuda = int(module.nvmlSystemGetCudaDriverVersion())
    except Exception:  # noqa: BLE001 - an NVML too old for the call: no figure
        return None, None
    return (driver.decode() if isinstance(driver, bytes) else driver), cuda


def check_cuda(device_class: str = "cuda", torch_cuda: dict | None = None) -> None:
    """Raise unless torch sees a CUDA device the driver can run (``torch_cuda``: a probe already
    made, as ``dnnprof doctor`` has)."""
    driver, driver_cuda = nvml_driver()
    torch_cuda = torch_cuda or probe_torch_cuda()
    if cuda_line(torch_cuda["cuda"]) is None:
        raise WorkerStartError(
            f"--device {device_class}, but this torch ({torch_cuda['torch']}) is a CPU build: install a CUDA "
            "build of torch, or run the worker with --device cpu"
        )
    if why := driver_too_old(driver_cuda, torch_cuda["cuda"], driver):
        raise WorkerStartError(why)
    if not torch_cuda["available"] or torch_cuda["count"] < 1:
        said = "; ".join(w.strip() for w in torch_cuda["warnings"] if w.strip())
        seen = f"NVML sees driver {driver}" if driver else "NVML finds no NVIDIA driver"
        raise WorkerStartError(
            f"--device {device_class}, but torch {torch_cuda['torch']} (CUDA {torch_cuda['cuda']}) "
            f"sees no CUDA device ({seen}{'; torch says: ' + said if said else ''}): "
            f"{JETSON_HINT if device_class == 'jetson' else GPU_HINT}"
        )


def check_worker_can_start(device_class: str, data_dir: Path, torch_cuda: dict | None = None) -> None:
    """Raise :class:`WorkerStartError` where a worker of ``device_class`` could not measure."""
    check_data_dir(data_dir)
    if device_class in ("cuda", "jetson"):
        check_cuda(device_class, torch_cuda)
