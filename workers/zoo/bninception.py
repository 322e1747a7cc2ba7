"""BN-Inception (Ioffe & Szegedy, 2015), laid out as the Caffe port the paper used
(Cadene's ``pretrainedmodels``): biased convolutions, each followed by batch norm and ReLU, and the
same module names, so that port's checkpoint loads as it is."""

from __future__ import annotations

import torch
from torch import nn

# name: (1x1, 3x3 reduce, 3x3, double-3x3 reduce, double-3x3, pool kind, pool projection, stride)
# A stride-2 block has no 1x1 branch and passes its max-pooled input through unprojected.
BLOCKS: list[tuple[str, int, int, int, int, int, str, int, int]] = [
    ("3a", 64, 64, 64, 64, 96, "avg", 32, 1),
    ("3b", 64, 64, 96, 64, 96, "avg", 64, 1),
    ("3c", 0, 128, 160, 64, 96, "max", 0, 2),
    ("4a", 224, 64, 96, 96, 128, "avg", 128, 1),
    ("4b", 192, 96, 128, 96, 128, "avg", 128, 1),
    ("4c", 160, 128, 160, 128, 160, "avg", 128, 1),
    ("4d", 96, 128, 192, 160, 192, "avg", 128, 1),
    ("4e", 0, 128, 192, 192, 256, "max", 0, 2),
    ("5a", 352, 192, 320, 160, 224, "avg", 128, 1),
    ("5b", 352, 192, 320, 192, 224, "max", 128, 1),
]


class BNInception(nn.Module):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self._convs: list[str] = []
        self._conv("conv1_7x7_s2", 3, 64, 7, 2, 3)
        self.pool1_3x3_s2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self._conv("conv2_3x3_reduce", 64, 64, 1)
        self._conv("conv2_3x3", 64, 192, 3, 1, 1)
        self.pool2_3x3_s2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        channels = 192
        for name, c1, r3, c3, rd, cd, pool, proj, stride in BLOCKS:
            p = f"inception_{name}"
            if c1:
                self._conv(f"{p}_1x1", channels, c1, 1)
            self._conv(f"{p}_3x3_reduce", channels, r3, 1)
            self._conv(f"{p}_3x3", r3, c3, 3, stride, 1)
            self._conv(f"{p}_double_3x3_reduce", channels, rd, 1)
            self._conv(f"{p}_double_3x3_1", rd, cd, 3, 1, 1)
            self._conv(f"{p}_double_3x3_2", cd, cd, 3, stride, 1)
            if stride == 2:
                setattr(self, f"{p}_pool", nn.MaxPool2d(3, stride=2, ceil_mode=True))
            elif pool == "avg":
                setattr(self, f"{p}_pool", nn.AvgPool2d(3, stride=1, padding=1, ceil_mode=True))
            else:
                setattr(self, f"{p}_pool", nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True))
            if proj:
                self._conv(f"{p}_pool_proj", channels, proj, 1)
            channels = c1 + c3 + cd + (proj if proj else channels)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.last_linear = nn.Linear(channels, num_classes)

    def _conv(self, name: str, cin: int, cout: int, k: int, stride: int = 1, pad: int = 0) -> None:
        setattr(self, name, nn.Conv2d(cin, cout, k, stride=stride, padding=pad))
        setattr(self, f"{name}_bn", nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1))

    def _cbr(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(getattr(self, f"{name}_bn")(getattr(self, name)(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._cbr("conv1_7x7_s2", x)
        x = self.pool1_3x3_s2(x)
        x = self._cbr("conv2_3x3", self._cbr("conv2_3x3_reduce", x))
        x = self.pool2_3x3_s2(x)
        for name, c1, *_rest, proj, _stride in BLOCKS:
            p = f"inception_{name}"
            branches = []
            if c1:
                branches.append(self._cbr(f"{p}_1x1", x))
            branches.append(self._cbr(f"{p}_3x3", self._cbr(f"{p}_3x3_reduce", x)))
            d = self._cbr(f"{p}_double_3x3_reduce", x)
            branches.append(self._cbr(f"{p}_double_3x3_2", self._cbr(f"{p}_double_3x3_1", d)))
            pooled = getattr(self, f"{p}_pool")(x)
            branches.append(self._cbr(f"{p}_pool_proj", pooled) if proj else pooled)
            x = torch.cat(branches, 1)
        return self.last_linear(torch.flatten(self.global_pool(x), 1))
