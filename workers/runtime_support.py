"""Which runtimes this worker can run, read from the installed distributions and tools without
importing any of them (the worker's main process advertises them in its heartbeat, and it never
imports torch: its pool forks)."""

from __future__ import annotations

import importlib.metadata
import shutil


def installed(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def available_runtimes(device_class: str) -> dict[str, str]:
    """name -> version of each runtime a worker of this class can run (eager always, with torch).

    compile needs a C compiler for inductor's CPU kernels (Triton on a GPU comes with torch's CUDA
    build); ONNX Runtime and OpenVINO need the ONNX exporter (onnx, onnxscript) and are measured
    on a CPU here: ONNX Runtime's CUDA and TensorRT providers, and TensorRT itself, are not
    offered until their path has run on a GPU (none has been lent: see workers/engine/runtimes)."""
    out: dict[str, str] = {}
    torch_version = installed("torch")
    if torch_version is None:
        return out
    out["eager"] = torch_version.split("+")[0]
    if device_class != "cpu" or shutil.which("cc") or shutil.which("gcc"):
        out["compile"] = out["eager"]
    exporter = installed("onnx") and installed("onnxscript")
    ort = installed("onnxruntime")
    if exporter and ort and device_class == "cpu":
        out["onnxruntime"] = ort
    openvino = installed("openvino")
    if exporter and openvino and device_class == "cpu":
        out["openvino"] = openvino
    return out
