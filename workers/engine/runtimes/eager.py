"""Eager PyTorch: the module itself (the paper's runtime, and every profile's reference)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dnnprof.contract import ProfileSettings, RuntimeReport
from workers.engine.device import DeviceContext


class EagerPrepared:
    def __init__(self, model: nn.Module, report: RuntimeReport) -> None:
        self.model = model
        self.report = report

    def bind(self, x: torch.Tensor) -> Callable[[], object]:
        model = self.model
        return lambda: model(x)

    def logits(self, x: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return self.model(x).float().cpu().numpy()


def eager(model: nn.Module) -> EagerPrepared:
    return EagerPrepared(model, RuntimeReport(name="eager", version=torch.__version__.split("+")[0]))


class EagerRuntime:
    name = "eager"

    def prepare(
        self, model: nn.Module, settings: ProfileSettings, ctx: DeviceContext, cache: Path
    ) -> EagerPrepared:
        return eager(model)
