"""Which runtimes this worker can run, read from the installed distributions and tools without
importing any of them (the worker's main process advertises them in its heartbeat, and it never
imports torch: its pool forks). What each runtime needs is its row in :mod:`dnnprof.runtimes`."""

from __future__ import annotations

import importlib.metadata
import shutil

from dnnprof.runtimes import RUNTIME_SPECS, RuntimeSpec


def installed(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def available_runtimes(device_class: str) -> dict[str, str]:
    """name -> version of each runtime a worker of this class can run (eager always, with torch):
    the runtimes measured on this class whose distributions (and, where the row says so, a C
    compiler or Triton) are here. The version is the runtime's own distribution's (torch's for eager and
    compile)."""
    torch_version = installed("torch")
    if torch_version is None:
        return {}
    out: dict[str, str] = {}
    for spec in RUNTIME_SPECS.values():
        if spec.unavailable or device_class not in spec.device_classes or not _tools_here(spec, device_class):
            continue
        versions = [installed(d) for d in spec.distributions]
        if all(versions):
            out[spec.name] = versions[-1] if versions else torch_version.split("+")[0]  # type: ignore[assignment]
    return out


def _tools_here(spec: RuntimeSpec, device_class: str) -> bool:
    if device_class in spec.needs_c_compiler_on and not (shutil.which("cc") or shutil.which("gcc")):
        return False
    triton = installed("triton") or installed("pytorch-triton")
    return device_class not in spec.needs_triton_on or bool(triton)
