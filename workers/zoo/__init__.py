"""Architectures of the paper that neither torchvision nor timm ships, registered by name.

Each entry builds the model and records its input size and the published weights URL, so the
catalogue can list it and users who can download the weights can load them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ZooEntry:
    build: Callable[[], nn.Module]
    input_size: int
    weights_url: str | None
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"
    crop_pct: float = 0.875
    input_space: str = "RGB"  # Caffe ports take BGR in 0..255 with mean/std in those units
    input_range: float = 1.0
    notes: str | None = None
    #: Renames a published checkpoint's keys to this implementation's module names, where they differ.
    checkpoint_filter: Callable[[StateDict], StateDict] | None = None


REGISTRY: dict[str, ZooEntry] = {}


def register(name: str, entry: ZooEntry) -> None:
    REGISTRY[name] = entry


def create(name: str, *, pretrained: bool = False) -> nn.Module:
    if name not in REGISTRY:
        raise KeyError(f"no zoo model named {name!r}; known: {', '.join(sorted(REGISTRY)) or 'none'}")
    entry = REGISTRY[name]
    model = entry.build()
    if pretrained:
        if entry.weights_url is None:
            raise RuntimeError(f"{name} has no published weights")
        import torch.hub

        state = torch.hub.load_state_dict_from_url(entry.weights_url, map_location="cpu", check_hash=False)
        if entry.checkpoint_filter is not None:
            state = entry.checkpoint_filter(state)
        model.load_state_dict(state)
    return model


def _register_paper_zoo() -> None:
    from workers.zoo.bninception import BNInception
    from workers.zoo.nasnet_mobile import NASNetAMobile, from_cadene_checkpoint
    from workers.zoo.resnets import cafferesnet101, fbresnet152
    from workers.zoo.shufflenet import ShuffleNetV1

    cadene = "http://data.lip6.fr/cadene/pretrainedmodels/"
    register(
        "bninception",
        ZooEntry(
            build=BNInception,
            input_size=224,
            weights_url=cadene + "bn_inception-239d2248.pth",
            mean=(104.0, 117.0, 128.0),
            std=(1.0, 1.0, 1.0),
            input_space="BGR",
            input_range=255.0,
        ),
    )
    register(
        "cafferesnet101",
        ZooEntry(
            build=cafferesnet101,
            input_size=224,
            weights_url=cadene + "cafferesnet101-9d633cc0.pth",
            mean=(102.9801, 115.9465, 122.7717),
            std=(1.0, 1.0, 1.0),
            input_space="BGR",
            input_range=255.0,
        ),
    )
    register(
        "fbresnet152",
        ZooEntry(build=fbresnet152, input_size=224, weights_url=cadene + "fbresnet152-2e20f6b4.pth"),
    )
    register(
        "nasnetamobile",
        ZooEntry(
            build=NASNetAMobile,
            input_size=224,
            weights_url=cadene + "nasnetamobile-7e03cead.pth",
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            interpolation="bicubic",
            checkpoint_filter=from_cadene_checkpoint,
        ),
    )
    register(
        "shufflenet_v1_g3",
        ZooEntry(
            build=ShuffleNetV1,
            input_size=224,
            weights_url=None,
            notes="no PyTorch checkpoint is published at a stable URL (Megvii's are on a drive)",
        ),
    )


_register_paper_zoo()
