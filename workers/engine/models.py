"""Building a model from its catalogue entry. Only catalogue names reach here: nothing a client
sends can point the builder at a URL or a path."""

from __future__ import annotations

import torch
from torch import nn

from dnnprof.contract import ModelInfo


def build_model(info: ModelInfo, *, pretrained: bool = False, tag: str | None = None) -> nn.Module:
    """An eval-mode fp32 model on the CPU, with random weights unless ``pretrained``."""
    if info.source == "tv":
        import torchvision

        weights = "DEFAULT" if pretrained else None
        kwargs = {} if pretrained else _TV_RANDOM_INIT_KWARGS.get(info.architecture, {})
        model = torchvision.models.get_model(info.architecture, weights=weights, **kwargs)
    elif info.source == "timm":
        import timm

        name = f"{info.architecture}.{tag}" if tag else info.architecture
        model = timm.create_model(name, pretrained=pretrained)
    elif info.source == "dnnprof":
        from workers import zoo

        model = zoo.create(info.architecture, pretrained=pretrained)
    else:  # pragma: no cover - the contract's Literal forbids it
        raise ValueError(f"unknown model source {info.source!r}")
    return model.eval()


#: Built without weights, torchvision's GoogLeNet keeps the auxiliary heads its published
#: checkpoint drops, and both Inceptions spend seconds on scipy's truncated-normal init. These
#: kwargs make a random-weight model the published architecture (same parameter count), fast.
_TV_RANDOM_INIT_KWARGS: dict[str, dict[str, bool]] = {
    "googlenet": {"aux_logits": False, "init_weights": False},
    "inception_v3": {"init_weights": False},  # its checkpoint keeps AuxLogits (27.2 M params)
}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class _CountingSink:
    """A write-only file object that counts bytes, so torch.save costs no memory."""

    def __init__(self) -> None:
        self.size = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass


def parameter_file_bytes(model: nn.Module) -> int:
    """Size of the parameter file torch.save would write for this model, in its current dtype."""
    sink = _CountingSink()
    torch.save(model.state_dict(), sink)
    return sink.size
