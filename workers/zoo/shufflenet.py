"""ShuffleNet v1 (Zhang et al., 2018), the paper's "ShuffleNet": 1x width, 3 groups.

Units: grouped 1x1 -> channel shuffle -> 3x3 depthwise -> grouped 1x1, with a residual add, or at
the start of a stage (stride 2) an average-pooled shortcut concatenated. The first 1x1 of the first
stage is not grouped (its input has only 24 channels), as in the paper.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

STAGE_CHANNELS = {
    1: (144, 288, 576),
    2: (200, 400, 800),
    3: (240, 480, 960),
    4: (272, 544, 1088),
    8: (384, 768, 1536),
}
STAGE_REPEATS = (4, 8, 4)  # units per stage, the first one strided


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int, stride: int, group_first: bool) -> None:
        super().__init__()
        self.stride = stride
        self.groups = groups if group_first else 1
        branch_out = cout - cin if stride == 2 else cout
        mid = cout // 4
        self.compress = nn.Sequential(
            nn.Conv2d(cin, mid, 1, groups=self.groups, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True)
        )
        self.depthwise = nn.Sequential(
            nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=mid, bias=False), nn.BatchNorm2d(mid)
        )
        self.expand = nn.Sequential(
            nn.Conv2d(mid, branch_out, 1, groups=groups, bias=False), nn.BatchNorm2d(branch_out)
        )
        self.shuffle_groups = groups
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        out = self.compress(x)
        out = channel_shuffle(out, self.shuffle_groups)
        out = self.expand(self.depthwise(out))
        if self.stride == 2:
            return self.relu(torch.cat([nn.functional.avg_pool2d(x, 3, stride=2, padding=1), out], 1))
        return self.relu(x + out)


class ShuffleNetV1(nn.Module):
    def __init__(self, groups: int = 3, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, 24, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(24), nn.ReLU(inplace=True)
        )
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        units, cin = [], 24
        for stage, (cout, repeats) in enumerate(zip(STAGE_CHANNELS[groups], STAGE_REPEATS, strict=True)):
            for i in range(repeats):
                units.append(
                    ShuffleUnit(cin, cout, groups, 2 if i == 0 else 1, group_first=(stage, i) != (0, 0))
                )
                cin = cout
        self.stages = nn.Sequential(*units)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.last_linear = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stages(self.maxpool(self.conv1(x)))
        return self.last_linear(self.global_pool(x).flatten(1))
