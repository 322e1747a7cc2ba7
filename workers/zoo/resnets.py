"""The two ResNet ports of the paper's zoo that torchvision lacks, with the module names of their
published checkpoints (``last_linear`` for the classifier).

- FBResNet-152: Facebook's Torch ResNet-152; every convolution has a bias.
- CaffeResNet-101: Kaiming He's Caffe ResNet-101; the stride sits in the first 1x1 convolution of a
  bottleneck (not the 3x3), and the stem's max-pool rounds up.
"""

from __future__ import annotations

from torch import Tensor, nn


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int, *, bias: bool, stride_in_1x1: bool) -> None:
        super().__init__()
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = nn.Conv2d(cin, planes, 1, stride=s1, bias=bias)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=s3, padding=1, bias=bias)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=bias)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != planes * 4:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, planes * 4, 1, stride=stride, bias=bias), nn.BatchNorm2d(planes * 4)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (self.downsample(x) if self.downsample is not None else x))


class PortedResNet(nn.Module):
    def __init__(
        self, layers: list[int], *, bias: bool, stride_in_1x1: bool, ceil_pool: bool, num_classes: int = 1000
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=bias)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = (
            nn.MaxPool2d(3, stride=2, padding=0, ceil_mode=True)
            if ceil_pool
            else nn.MaxPool2d(3, 2, padding=1)
        )
        cin = 64
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers, strict=True), start=1):
            stages = []
            for j in range(blocks):
                stride = 2 if (j == 0 and i > 1) else 1
                stages.append(Bottleneck(cin, planes, stride, bias=bias, stride_in_1x1=stride_in_1x1))
                cin = planes * 4
            setattr(self, f"layer{i}", nn.Sequential(*stages))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.last_linear = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.last_linear(self.avgpool(x).flatten(1))


def fbresnet152() -> PortedResNet:
    return PortedResNet([3, 8, 36, 3], bias=True, stride_in_1x1=False, ceil_pool=False)


def cafferesnet101() -> PortedResNet:
    return PortedResNet([3, 4, 23, 3], bias=False, stride_in_1x1=True, ceil_pool=True)
