"""The runtime seam: prepare a model once, bind an input to the call that is timed, and check the
prepared model's outputs against eager PyTorch's on the same input."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from dnnprof.contract import OutputsCheck, ProfileSettings, RuntimeReport
from workers.engine.device import DeviceContext

#: (atol, rtol) of the outputs check per precision: a runtime's logits may differ from eager's by
#: at most atol + rtol x the largest eager logit (reassociated sums, fused kernels).
TOLERANCES = {"fp32": (1e-3, 1e-3), "bf16": (5e-2, 5e-2), "amp": (5e-2, 5e-2), "fp16": (1e-2, 1e-2)}
#: Images in the outputs check (a small batch: cheap, and more than one image per batch).
CHECK_BATCH = 2


class RuntimeUnavailableError(RuntimeError):
    """The runtime asked for is not installed on this worker (or not for its device)."""


class ExportError(RuntimeError):
    """The runtime cannot take this model (an export or a compile failed): a failed profile
    with the exporter's reason, never a crash or a retry."""


class Prepared(Protocol):
    """A model ready to run in one runtime.

    What the engine assumes of it, so its figures mean what eager's do:

    - **Timing.** On a GPU the timer records CUDA events on torch's *current stream*
      (``workers.engine.timing.CudaEventTimer``), so the forward must enqueue its work there:
      a runtime with a stream of its own (ONNX Runtime's CUDA provider, a TensorRT execution
      context) is handed ``torch.cuda.current_stream().cuda_stream`` (``user_compute_stream``,
      ``execute_async_v3(stream)``), or synchronises its stream before it returns. On a CPU the
      timer is the wall clock around the call, which must not return before the outputs exist.
    - **Memory.** The figure is what the process holds on the device, read by the device's probe
      (``workers.engine.memory``): NVML per process on a GPU, so memory a runtime allocates
      outside torch's allocator (ONNX Runtime's arena, a TensorRT engine) is counted; torch's own
      peaks only describe torch's allocations. A runtime need not report its memory itself.
    """

    report: RuntimeReport

    def bind(self, x: torch.Tensor) -> Callable[[], object]:
        """The zero-argument forward on ``x`` that the timer times (inputs already where the
        runtime reads them, so no copy is timed; on a GPU, enqueued on torch's current stream)."""
        ...

    def logits(self, x: torch.Tensor) -> np.ndarray:
        """One forward's outputs as a float32 array (for the outputs check)."""
        ...


class Runtime(Protocol):
    name: str

    def prepare(
        self, model: nn.Module, settings: ProfileSettings, ctx: DeviceContext, cache: Path
    ) -> Prepared:
        """Export, compile or build ``model`` (already on the device, in the profile's dtype)."""
        ...


def frames_compiled(prepared: Prepared) -> int | None:
    """Frames compiled so far by a runtime that compiles on call (torch.compile), else None."""
    count = getattr(prepared, "frames_compiled", None)
    return count() if count is not None else None


def check_outputs(eager: nn.Module, prepared: Prepared, x: torch.Tensor, precision: str) -> OutputsCheck:
    """The prepared model's outputs against the eager model's on the same input.

    The tolerance also holds eager's disagreement with itself (each image alone against the
    batch: another order of the same sums), twice over: a runtime cannot be asked to agree with
    eager more closely than eager agrees with itself. With random weights some deep networks are
    that ill-conditioned (SE-ResNet-152's logits reach ~7,600 and move by ~3,500 between batch
    sizes in eager PyTorch itself); a wrong export (shifted, permuted logits) stays far outside."""
    with torch.inference_mode():
        expected = eager(x).float().cpu().numpy()
        alone = np.concatenate([eager(x[i : i + 1]).float().cpu().numpy() for i in range(x.shape[0])])
    got = prepared.logits(x)
    atol, rtol = TOLERANCES[precision]
    diff = float(np.max(np.abs(got - expected))) if got.shape == expected.shape else float("inf")
    self_diff = float(np.max(np.abs(alone - expected)))
    tolerance = atol + rtol * float(np.max(np.abs(expected))) + 2 * self_diff
    agreement = (
        float(np.mean(got.argmax(axis=1) == expected.argmax(axis=1))) if got.shape == expected.shape else 0.0
    )
    return OutputsCheck(
        batch_size=x.shape[0],
        max_abs_diff=diff,
        tolerance=tolerance,
        eager_self_diff=self_diff,
        top1_agreement=agreement,
        outputs_match=diff <= tolerance,
    )
