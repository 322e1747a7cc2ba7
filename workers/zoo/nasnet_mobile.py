"""NASNet-A-Mobile (Zoph et al., 2018: "4 @ 1056"), built from timm's NASNet cells.

timm ships only NASNet-A-Large (6 cells per stage, 4032 features, 96-channel stem). The mobile
network is the same search result stacked 4 cells per stage with a 32-channel stem and 1056
features (filters = 1056 / 24 = 44), wired as the large one: each cell takes the previous two.

The published checkpoint (Cadene's pretrainedmodels, ported from TensorFlow) names the cells
``cell_0``..``cell_3``, ``reduction_cell_0``, ``cell_6``..``cell_9``, ``reduction_cell_1``,
``cell_12``..``cell_15``; inside a cell its parameter names are timm's (timm's NASNet is the same
port), so :func:`from_cadene_checkpoint` only renames the cells.
"""

from __future__ import annotations

import re
from functools import partial

import torch
import torch.nn.functional as F
from timm.layers import ConvNormAct
from timm.models.nasnet import CellStem0, CellStem1, FirstCell, NormalCell, ReductionCell0, ReductionCell1
from torch import Tensor, nn


class NASNetAMobile(nn.Module):
    def __init__(
        self,
        num_classes: int = 1000,
        stem_size: int = 32,
        num_features: int = 1056,
        cells_per_stage: int = 4,
        pad_type: str = "same",
    ) -> None:
        super().__init__()
        c = num_features // 24
        self.conv0 = ConvNormAct(
            3,
            stem_size,
            kernel_size=3,
            padding=0,
            stride=2,
            norm_layer=partial(nn.BatchNorm2d, eps=0.001, momentum=0.1),
            apply_act=False,
        )
        self.cell_stem_0 = CellStem0(stem_size, num_channels=c // 4, pad_type=pad_type)
        self.cell_stem_1 = CellStem1(stem_size, num_channels=c // 2, pad_type=pad_type)
        cells: list[nn.Module] = []
        # (left input, right input, width) per stage, in units of c, as in timm's NASNet-A-Large.
        for stage, (first_left, first_right, width) in enumerate(((1, 2, 1), (6, 8, 2), (12, 16, 4))):
            if stage == 1:
                cells.append(ReductionCell0(6 * c, 2 * c, 6 * c, 2 * c, pad_type=pad_type))
            if stage == 2:
                cells.append(ReductionCell1(12 * c, 4 * c, 12 * c, 4 * c, pad_type=pad_type))
            out = 6 * width * c
            cells.append(
                FirstCell(first_left * c, width * c // 2, first_right * c, width * c, pad_type=pad_type)
            )
            for i in range(cells_per_stage - 1):
                left = (first_right if i == 0 else 6 * width) * c
                cells.append(NormalCell(left, width * c, out, width * c, pad_type=pad_type))
        self.cells = nn.ModuleList(cells)
        self.act = nn.ReLU(inplace=True)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.last_linear = nn.Linear(num_features, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x_conv0 = self.conv0(x)
        x_stem_0 = self.cell_stem_0(x_conv0)
        prev, cur = x_stem_0, self.cell_stem_1(x_conv0, x_stem_0)
        for cell in self.cells:
            if isinstance(cell, (ReductionCell0, ReductionCell1)):
                # a reduction cell takes (last, second last); the first cell after it the reduced
                # output and the cell before the reduction
                cur = cell(cur, prev)
                continue
            prev, cur = cur, cell(cur, prev)
        x = F.relu(cur)
        return self.last_linear(self.global_pool(x).flatten(1))


#: The checkpoint's cell names, in the order of :attr:`NASNetAMobile.cells`.
CADENE_CELL_NAMES: tuple[str, ...] = (
    *(f"cell_{i}" for i in range(4)),
    "reduction_cell_0",
    *(f"cell_{i}" for i in range(6, 10)),
    "reduction_cell_1",
    *(f"cell_{i}" for i in range(12, 16)),
)
_CELL_INDEX = {name: index for index, name in enumerate(CADENE_CELL_NAMES)}
_CELL_KEY = re.compile(r"^((?:reduction_)?cell_\d+)\.")


def from_cadene_checkpoint(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The published ``nasnetamobile-7e03cead.pth`` with its cells renamed to ``cells.<i>``."""

    def rename(key: str) -> str:
        match = _CELL_KEY.match(key)
        if match is None or match.group(1) not in _CELL_INDEX:
            return key
        return f"cells.{_CELL_INDEX[match.group(1)]}." + key[match.end() :]

    return {rename(key): value for key, value in state.items()}
