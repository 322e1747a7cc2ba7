"""What runs the model while it is timed: eager PyTorch (the paper's), torch.compile, ONNX Runtime,
OpenVINO. Each runtime is one module with a :class:`~workers.engine.runtimes.base.Runtime` that
prepares a model into a :class:`~workers.engine.runtimes.base.Prepared`, which binds one input to
a zero-argument forward: the call the engine's timer times. Which runtimes a worker has is read
without importing them (:mod:`workers.runtime_support`): the worker's main process advertises
them in its heartbeat.

TensorRT is not here yet: it needs a GPU, and none has been lent to this project (its runtime is
never advertised, so a request for it is refused with the runtimes each device offers).
"""

from __future__ import annotations

from workers.engine.runtimes.base import (
    ExportError,
    Prepared,
    Runtime,
    RuntimeUnavailableError,
    check_outputs,
    frames_compiled,
)
from workers.engine.runtimes.compiled import CompileRuntime
from workers.engine.runtimes.eager import EagerRuntime
from workers.engine.runtimes.onnx import OnnxRuntime, OpenVinoRuntime
from workers.runtime_support import available_runtimes

RUNTIMES: dict[str, Runtime] = {
    r.name: r for r in (EagerRuntime(), CompileRuntime(), OnnxRuntime(), OpenVinoRuntime())
}

__all__ = [
    "RUNTIMES",
    "ExportError",
    "Prepared",
    "Runtime",
    "RuntimeUnavailableError",
    "check_outputs",
    "frames_compiled",
    "runtime_for",
]


def runtime_for(name: str, device_class: str) -> Runtime:
    offered = available_runtimes(device_class)
    runtime = RUNTIMES.get(name)
    if runtime is None or name not in offered:
        raise RuntimeUnavailableError(
            f"this {device_class} worker cannot run the {name} runtime (it offers: {', '.join(offered)})"
        )
    return runtime
