"""What runs the model while it is timed. Each runtime is a row in :mod:`dnnprof.runtimes` (its
devices, precisions, options, packages) and one module here with a
:class:`~workers.engine.runtimes.base.Runtime` that prepares a model into a
:class:`~workers.engine.runtimes.base.Prepared`, which binds one input to a zero-argument forward:
the call the engine's timer times. Which runtimes a worker has is read without importing them
(:mod:`workers.runtime_support`): the worker's main process advertises them in its heartbeat.
"""

from __future__ import annotations

import importlib

from dnnprof.runtimes import RUNTIME_SPECS
from workers.engine.runtimes.base import (
    ExportError,
    Prepared,
    Runtime,
    RuntimeUnavailableError,
    check_outputs,
    frames_compiled,
)
from workers.runtime_support import available_runtimes

__all__ = [
    "ExportError",
    "Prepared",
    "Runtime",
    "RuntimeUnavailableError",
    "check_outputs",
    "frames_compiled",
    "runtime_for",
]


def runtime_for(name: str, device_class: str) -> Runtime:
    """The implementation its row names, where this worker offers it (imported on first use, so a
    worker without a runtime's packages never imports its module)."""
    offered = available_runtimes(device_class)
    if name not in offered:
        raise RuntimeUnavailableError(
            f"this {device_class} worker cannot run the {name} runtime (it offers: {', '.join(offered)})"
        )
    module, _, cls = RUNTIME_SPECS[name].implementation.partition(":")
    return getattr(importlib.import_module(module), cls)()
