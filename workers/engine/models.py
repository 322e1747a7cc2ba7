"""Building a model from its catalogue entry. Only catalogue names reach here: nothing a client
sends can point the builder at a URL or a path."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
from torch import nn

from dnnprof.contract import ModelInfo


class WeightsNotCachedError(RuntimeError):
    """Pretrained weights are not in the cache and downloads are off."""


@contextlib.contextmanager
def no_downloads() -> Iterator[None]:
    """Pretrained weights from the cache only: torch.hub (torchvision, timm's URL weights, the
    zoo) refuses to download, and the Hugging Face hub runs offline. Whatever the network."""
    import torch.hub

    def refuse(url: str, dst: str, *args, **kwargs) -> None:
        raise WeightsNotCachedError(
            f"{url} is not in the weights cache ({torch.hub.get_dir()}) and downloads are off "
            "(DNNPROF_WEIGHTS_OFFLINE): put the file there first"
        )

    original = torch.hub.download_url_to_file
    offline = os.environ.get("HF_HUB_OFFLINE")
    torch.hub.download_url_to_file = refuse
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        torch.hub.download_url_to_file = original
        if offline is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = offline


def build_model(
    info: ModelInfo,
    *,
    pretrained: bool = False,
    tag: str | None = None,
    input_size: int | None = None,
    offline: bool = False,
) -> nn.Module:
    """An eval-mode fp32 model on the CPU, with random weights unless ``pretrained``.

    ``input_size`` (default: the entry's own) matters to models built for one input size, whose
    position embeddings are sized by it (ViTs): they are built for the size they will be fed.
    ``offline``: pretrained weights from the cache only (:func:`no_downloads`).
    """
    if pretrained and offline:
        with no_downloads():
            return build_model(info, pretrained=True, tag=tag, input_size=input_size)
    size = input_size or info.input_size
    if info.source == "tv":
        import torchvision

        weights = (tag or "DEFAULT") if pretrained else None  # "IMAGENET1K_V1": the paper's weights
        kwargs: dict = dict(_TV_EVAL_KWARGS.get(info.architecture, {}))
        if not pretrained:
            kwargs.update(_TV_RANDOM_INIT_KWARGS.get(info.architecture, {}))
            if info.architecture.startswith("vit_"):
                kwargs["image_size"] = size  # vit_h_14's weights are for 518, the builder's default 224
        model = torchvision.models.get_model(info.architecture, weights=weights, **kwargs)
    elif info.source == "timm":
        import timm

        name = f"{info.architecture}.{tag}" if tag else info.architecture
        model = None
        if size != info.input_size:
            try:  # transformers are built for an image size; convolutional models take none
                model = timm.create_model(name, pretrained=pretrained, img_size=size)
            except TypeError:
                model = None
        if model is None:
            model = timm.create_model(name, pretrained=pretrained)
    elif info.source == "dnnprof":
        from workers import zoo

        model = zoo.create(info.architecture, pretrained=pretrained)
    else:  # pragma: no cover - the contract's Literal forbids it
        raise ValueError(f"unknown model source {info.source!r}")
    return model.eval()


#: The auxiliary classifiers of GoogLeNet and Inception-v3 only run in training: eval never
#: runs them, so they are not part of the model that is profiled (neither in its parameters, its
#: file size nor its FLOPs). torchvision loads the published weights and then drops them.
_TV_EVAL_KWARGS: dict[str, dict[str, bool]] = {
    "googlenet": {"aux_logits": False},
    "inception_v3": {"aux_logits": False},
}
#: Without weights both Inceptions spend seconds on scipy's truncated-normal init.
_TV_RANDOM_INIT_KWARGS: dict[str, dict[str, bool]] = {
    "googlenet": {"init_weights": False},
    "inception_v3": {"init_weights": False},
}


@contextlib.contextmanager
def empty_weights() -> Iterator[None]:
    """Build models whose parameters and buffers live on the meta device (no memory, no init),
    while the rest of the constructor's tensor arithmetic (widths, drop-path rates) runs on the
    CPU as usual: enough to count parameters and FLOPs of any size in milliseconds."""
    register_parameter = nn.Module.register_parameter
    register_buffer = nn.Module.register_buffer

    def on_meta_parameter(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register_parameter(module, name, param)

    def on_meta_buffer(module: nn.Module, name: str, tensor: torch.Tensor | None, persistent: bool = True):
        if tensor is not None:
            tensor = tensor.to("meta")
        register_buffer(module, name, tensor, persistent=persistent)

    nn.Module.register_parameter = on_meta_parameter  # type: ignore[method-assign]
    nn.Module.register_buffer = on_meta_buffer  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = register_parameter  # type: ignore[method-assign]
        nn.Module.register_buffer = register_buffer  # type: ignore[method-assign]


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


def deployed_form(model: nn.Module) -> tuple[nn.Module, int]:
    """The model as it is deployed for inference: timm's re-parameterisation (RepVGG branches
    merged, conv and batch norm fused, ...). Returns the model and how many modules changed."""
    from timm.utils.model import reparameterize_model

    before = sum(1 for _ in model.modules())
    fused = reparameterize_model(model, inplace=True)
    changed = before - sum(1 for _ in fused.modules())
    return fused.eval(), changed
