"""Architectures of the paper that neither torchvision nor timm ships, registered by name.

Each entry builds the model and records its input size and the published weights URL, so the
catalogue can list it and users who can download the weights can load them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class ZooEntry:
    build: Callable[[], nn.Module]
    input_size: int
    weights_url: str | None
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"
    crop_pct: float = 0.875


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
        model.load_state_dict(state)
    return model
