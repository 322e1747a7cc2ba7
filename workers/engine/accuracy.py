"""Top-1/top-5 on an ImageNet validation folder: centre crop only, each model's own preprocessing.

The folder is given by path on the worker (``DNNPROF_IMAGENET_VAL``), either in the ImageFolder
layout (one sub-folder per class, sorted synsets = class indices) or flat (all images in one folder)
with a labels file: ``labels.txt`` beside the images (or ``DNNPROF_IMAGENET_VAL_LABELS``), one line
per image, either ``<file name> <class index>`` or just ``<class index>`` for the sorted files.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image
from timm.data.transforms_factory import transforms_imagenet_eval
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from dnnprof.contract import ModelInfo

IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".bmp", ".webp", ".ppm"}


class AccuracyUnavailableError(RuntimeError):
    """The worker cannot measure accuracy as asked (no dataset, unreadable layout, no weights)."""


def eval_transform(info: ModelInfo, input_size: int | None = None) -> Callable:
    """The model's own centre-crop preprocessing: torchvision's ``weights.transforms()`` for its
    models, timm's eval transform with the model's data config for the rest (resize to
    ``size / crop_pct``, centre-crop ``size``, normalise). Caffe ports get BGR in 0..255."""
    if info.source == "tv":
        import torchvision.models as tvm

        preset = tvm.get_model_weights(info.architecture).DEFAULT.transforms
        if input_size is None or input_size == info.input_size:
            return preset()
        return preset(crop_size=input_size, resize_size=math.floor(input_size / info.crop_pct))
    bgr = info.input_space == "BGR"
    # (x / range - mean / range) / (std / range) = (x - mean) / std: the port's own units. A BGR
    # port's mean/std are in BGR order: normalise the RGB image with them reversed, then flip.
    order = slice(None, None, -1) if bgr else slice(None)
    transform = transforms_imagenet_eval(
        img_size=input_size or info.input_size,
        crop_pct=info.crop_pct,
        crop_mode=info.crop_mode,
        interpolation=info.interpolation,
        mean=tuple(m / info.input_range for m in info.mean[order]),
        std=tuple(s / info.input_range for s in info.std[order]),
    )
    if not bgr:
        return transform

    def to_bgr(img: Image.Image) -> torch.Tensor:
        return transform(img).flip(0)

    return to_bgr


class FlatValFolder(Dataset):
    def __init__(self, root: Path, labels_file: Path, transform: Callable) -> None:
        files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        lines = [line.split() for line in labels_file.read_text().splitlines() if line.strip()]
        if lines and len(lines[0]) == 2:
            by_name = {name: int(label) for name, label in lines}
            missing = [f.name for f in files if f.name not in by_name]
            if missing:
                raise AccuracyUnavailableError(
                    f"{labels_file} has no label for {len(missing)} images, e.g. {missing[0]}"
                )
            self.samples = [(f, by_name[f.name]) for f in files]
        else:
            if len(lines) != len(files):
                raise AccuracyUnavailableError(
                    f"{labels_file} has {len(lines)} labels for {len(files)} images in {root}"
                )
            self.samples = [(f, int(line[0])) for f, line in zip(files, lines, strict=True)]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        with Image.open(path) as img:
            return self.transform(img.convert("RGB")), label


def open_val_set(root: Path | None, transform: Callable, labels_file: Path | None = None) -> Dataset:
    if root is None:
        raise AccuracyUnavailableError(
            "accuracy needs the ImageNet validation set on the worker: set DNNPROF_IMAGENET_VAL to its folder"
        )
    if not root.is_dir():
        raise AccuracyUnavailableError(f"DNNPROF_IMAGENET_VAL={root} is not a folder on this worker")
    if any(p.is_dir() for p in root.iterdir()):
        from torchvision.datasets import ImageFolder

        return ImageFolder(str(root), transform=transform)
    labels = labels_file or root / "labels.txt"  # DNNPROF_IMAGENET_VAL_LABELS, else beside the images
    if not labels.is_file():
        raise AccuracyUnavailableError(
            f"{root} has no class sub-folders and no labels file ({labels}): give one line per image, "
            "'<file> <class index>'"
        )
    return FlatValFolder(root, labels, transform)


def class_count(dataset: Dataset) -> int | None:
    """How many classes a validation set labels (1000 for ImageNet's), where it says."""
    if isinstance(dataset, Subset):
        return class_count(dataset.dataset)
    classes = getattr(dataset, "classes", None)
    if classes is not None:
        return len(classes)
    samples = getattr(dataset, "samples", None)
    return max(label for _, label in samples) + 1 if samples else None


def check_head(info: ModelInfo, dataset: Dataset) -> None:
    """Top-k over a head of other classes (ImageNet-22k, a headless feature checkpoint) would be
    a number without meaning: refuse it, saying why."""
    classes = class_count(dataset)
    if classes is not None and info.num_classes != classes:
        raise AccuracyUnavailableError(
            f"{info.name} has {info.num_classes} output classes and the validation set {classes}: "
            "accuracy needs a model trained on the set's classes (an ImageNet-1k head)"
        )


def evenly_spaced(dataset: Dataset, limit: int | None) -> Dataset:
    """A quick estimate on ``limit`` images spread over the whole set (so over all classes)."""
    n = len(dataset)
    if limit is None or limit >= n:
        return dataset
    step = n / limit
    return Subset(dataset, [int(i * step) for i in range(limit)])


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    device: torch.device,
    *,
    dtype: torch.dtype = torch.float32,
    memory_format: torch.memory_format = torch.contiguous_format,
    batch_size: int = 64,
    workers: int = 2,
    on_progress: Callable[[int, int], None] = lambda done, total: None,
) -> tuple[float, float, int]:
    """(top-1 %, top-5 %, images) of ``model`` on ``dataset``."""
    total = len(dataset)
    if total == 0:
        raise AccuracyUnavailableError("the validation set is empty")
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, pin_memory=device.type == "cuda")
    top1 = top5 = done = 0
    for images, labels in loader:
        images = images.to(device, dtype=dtype, non_blocking=True).contiguous(memory_format=memory_format)
        labels = labels.to(device)
        logits = model(images)
        if logits.shape[1] <= int(labels.max()):
            raise AccuracyUnavailableError(
                f"the model has {logits.shape[1]} outputs but the dataset has label {int(labels.max())}"
            )
        best = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = best == labels[:, None]
        top1 += int(hits[:, 0].sum())
        top5 += int(hits.any(dim=1).sum())
        done += labels.numel()
        on_progress(done, total)
    return 100.0 * top1 / done, 100.0 * top5 / done, done
