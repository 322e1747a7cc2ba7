"""torch.compile (inductor): compiled anew for each batch size (``torch._dynamo.reset()`` between,
as timm's benchmark does), so the compile falls in that batch size's first call, which the engine
times apart from warm-up (``first_call_s``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch._dynamo.utils import counters

from dnnprof.contract import ProfileSettings, RuntimeReport
from workers.engine.device import DeviceContext


class CompiledPrepared:
    def __init__(self, model: nn.Module, mode: str | None, report: RuntimeReport) -> None:
        self.model = model
        self.mode = mode
        self.report = report

    def compile(self) -> Callable:
        torch._dynamo.reset()  # a fresh compile per batch size: no recompilation is timed
        kwargs = {"mode": self.mode} if self.mode and self.mode != "default" else {}
        return torch.compile(self.model, dynamic=False, **kwargs)

    def bind(self, x: torch.Tensor) -> Callable[[], object]:
        compiled = self.compile()
        return lambda: compiled(x)

    def logits(self, x: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return self.compile()(x).float().cpu().numpy()

    def frames_compiled(self) -> int:
        """Frames dynamo has compiled in this process: more after a batch size's first call
        than at its end are recompilations (a guard that failed: shapes, Python values)."""
        return int(counters["frames"]["ok"])


class CompileRuntime:
    name = "compile"

    def prepare(
        self, model: nn.Module, settings: ProfileSettings, ctx: DeviceContext, cache: Path
    ) -> CompiledPrepared:
        mode = settings.runtime_options.mode if settings.runtime_options else None
        report = RuntimeReport(
            name=self.name,
            version=torch.__version__.split("+")[0],
            options=settings.runtime_options,
            graph_optimization=f"inductor, mode {mode or 'default'}",
        )
        return CompiledPrepared(model, mode, report)
