"""Accuracy without downloads: a generated validation set and a hand-built model whose predictions
are known, so top-1/top-5 are checked exactly; preprocessing against timm's and torchvision's own."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torch import nn

from dnnprof.contract import ModelInfo, ProfileSettings
from workers.engine.accuracy import (
    AccuracyUnavailableError,
    eval_transform,
    evaluate,
    evenly_spaced,
    open_val_set,
)
from workers.engine.scenario import ScenarioConfig, run_profile

CLASSES = 10


def grey(k: int) -> int:
    return 20 * k + 10  # the pixel value that encodes class k


class KnownAnswers(nn.Module):
    """Reads the class k from the image's brightness. Even k: predicts k. Odd k: predicts k + 1
    (mod 10) with k second, so k is in the top 5, except k = 9 whose prediction wraps to 0."""

    def forward(self, x):
        k = torch.round((x.mean(dim=(1, 2, 3)) * 255 - 10) / 20).long()
        target = torch.where(k % 2 == 0, k, (k + 1) % CLASSES)
        j = torch.arange(CLASSES, dtype=torch.float32)
        return -(j[None, :] - target[:, None].float()).abs() - 0.01 * j[None, :]


INFO = ModelInfo(
    name="test:known",
    source="dnnprof",
    architecture="known",
    input_size=8,
    crop_pct=1.0,
    mean=(0.0, 0.0, 0.0),
    std=(1.0, 1.0, 1.0),
    num_classes=CLASSES,
)
EXPECTED_TOP1 = 50.0  # the five even classes
EXPECTED_TOP5 = 90.0  # all but class 9


def write_image(path, k: int) -> None:
    Image.new("RGB", (12, 10), (grey(k),) * 3).save(path)


@pytest.fixture
def image_folder(tmp_path):
    root = tmp_path / "val"
    for k in range(CLASSES):
        (root / f"n{k:08d}").mkdir(parents=True)
        for i in range(2):
            write_image(root / f"n{k:08d}" / f"img{i}.png", k)
    return root


@pytest.fixture
def flat_folder(tmp_path):
    root = tmp_path / "flat"
    root.mkdir()
    lines = []
    for i in range(2 * CLASSES):
        name = f"ILSVRC2012_val_{i + 1:08d}.png"
        write_image(root / name, i % CLASSES)
        lines.append(f"{name} {i % CLASSES}")
    (root / "labels.txt").write_text("\n".join(lines) + "\n")
    return root


def test_top1_and_top5_on_an_image_folder_are_exact(image_folder):
    dataset = open_val_set(image_folder, eval_transform(INFO))
    seen = []
    top1, top5, n = evaluate(
        KnownAnswers(),
        dataset,
        torch.device("cpu"),
        batch_size=7,
        workers=0,
        on_progress=lambda done, total: seen.append((done, total)),
    )
    assert (top1, top5, n) == (EXPECTED_TOP1, EXPECTED_TOP5, 20)
    assert seen == [(7, 20), (14, 20), (20, 20)]


def test_flat_layout_with_a_labels_file_in_either_spelling(flat_folder):
    dataset = open_val_set(flat_folder, eval_transform(INFO))
    assert evaluate(KnownAnswers(), dataset, torch.device("cpu"), workers=0)[:2] == (
        EXPECTED_TOP1,
        EXPECTED_TOP5,
    )
    labels = [line.split()[1] for line in (flat_folder / "labels.txt").read_text().splitlines()]
    (flat_folder / "labels.txt").write_text("\n".join(labels) + "\n")  # one label per sorted file
    dataset = open_val_set(flat_folder, eval_transform(INFO))
    assert evaluate(KnownAnswers(), dataset, torch.device("cpu"), workers=0)[:2] == (
        EXPECTED_TOP1,
        EXPECTED_TOP5,
    )


def test_a_quick_estimate_spreads_its_images_over_the_set(image_folder):
    dataset = open_val_set(image_folder, eval_transform(INFO))
    subset = evenly_spaced(dataset, 10)
    assert sorted(label for _, label in subset) == list(range(CLASSES))
    assert evenly_spaced(dataset, 1000) is dataset


def test_missing_or_malformed_datasets_fail_with_a_clear_reason(tmp_path, flat_folder):
    with pytest.raises(AccuracyUnavailableError, match="DNNPROF_IMAGENET_VAL"):
        open_val_set(None, eval_transform(INFO))
    with pytest.raises(AccuracyUnavailableError, match="not a folder"):
        open_val_set(tmp_path / "nope", eval_transform(INFO))
    (flat_folder / "labels.txt").unlink()
    with pytest.raises(AccuracyUnavailableError, match="no labels file"):
        open_val_set(flat_folder, eval_transform(INFO))
    empty = tmp_path / "empty"
    (empty / "n0").mkdir(parents=True)
    with pytest.raises(FileNotFoundError):  # torchvision's ImageFolder: a class folder with no images
        open_val_set(empty, eval_transform(INFO))


def test_accuracy_is_part_of_the_profile(image_folder):
    settings = ProfileSettings(
        model=INFO.name,
        device="cpu",
        batch_sizes=(1,),
        runs=2,
        precision="fp32",
        input_size=8,
        accuracy=True,
        accuracy_images=None,
    )
    stages = []
    result = run_profile(
        INFO,
        settings,
        ScenarioConfig(device_class="cpu", imagenet_val=image_folder, loader_workers=0),
        model=KnownAnswers(),
        on_progress=lambda p: stages.append(p.stage),
    )
    assert (result.top1, result.top5, result.accuracy_images) == (EXPECTED_TOP1, EXPECTED_TOP5, 20)
    assert "accuracy" in stages and result.weights == "pretrained"


def test_a_head_of_other_classes_than_the_set_is_refused_with_the_reason(image_folder, flat_folder):
    import msgspec

    wide = msgspec.structs.replace(INFO, num_classes=21843)  # an ImageNet-22k head
    settings = ProfileSettings(
        model=INFO.name, device="cpu", batch_sizes=(1,), runs=2, precision="fp32", input_size=8, accuracy=True
    )
    for folder in (image_folder, flat_folder):
        config = ScenarioConfig(device_class="cpu", imagenet_val=folder, loader_workers=0)
        with pytest.raises(AccuracyUnavailableError, match="21843 output classes and the validation set 10"):
            run_profile(wide, settings, config, model=KnownAnswers())


def test_accuracy_without_a_dataset_fails_before_loading_weights():
    settings = ProfileSettings(
        model="tv:resnet18",
        device="cpu",
        batch_sizes=(1,),
        runs=2,
        precision="fp32",
        input_size=224,
        accuracy=True,
    )
    info = ModelInfo(name="tv:resnet18", source="tv", architecture="resnet18", input_size=224)
    with pytest.raises(AccuracyUnavailableError, match="DNNPROF_IMAGENET_VAL"):
        run_profile(info, settings, ScenarioConfig(device_class="cpu"))


def test_pretrained_weights_that_cannot_be_fetched_give_a_clear_reason(monkeypatch, tmp_path):
    """Deterministic whatever the network: the cache is empty and downloads are off, so the loader
    refuses (on a machine with a route to the weights host this used to download them)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-cache"))
    imagenet_like = tmp_path / "val"  # labels up to 999: ImageNet-1k's classes, as the head has
    imagenet_like.mkdir()
    write_image(imagenet_like / "first.png", 0)
    write_image(imagenet_like / "last.png", 9)
    (imagenet_like / "labels.txt").write_text("first.png 0\nlast.png 999\n")
    info = ModelInfo(name="tv:squeezenet1_1", source="tv", architecture="squeezenet1_1", input_size=224)
    settings = ProfileSettings(
        model=info.name,
        device="cpu",
        batch_sizes=(1,),
        runs=2,
        precision="fp32",
        input_size=224,
        accuracy=True,
    )
    with pytest.raises(
        AccuracyUnavailableError, match="could not load the pretrained weights of tv:squeezenet1_1"
    ) as refused:
        config = ScenarioConfig(device_class="cpu", imagenet_val=imagenet_like, weights_offline=True)
        run_profile(info, settings, config)
    assert "downloads are off (DNNPROF_WEIGHTS_OFFLINE)" in str(refused.value)
    assert "squeezenet1_1-b8a52dc0.pth" in str(refused.value)


def sample_image() -> Image.Image:
    g = torch.Generator().manual_seed(0)
    pixels = (torch.rand(300, 400, 3, generator=g) * 255).to(torch.uint8).numpy()
    return Image.fromarray(pixels)


@pytest.mark.parametrize(
    "arch",
    [
        "resnet50",
        "vit_small_patch16_224",
        "inception_v4",
        "convnext_tiny",
        "efficientnet_b3",
        "legacy_seresnext50_32x4d",
    ],
)
def test_preprocessing_equals_timms_own_for_timm_models(arch):
    import timm
    from timm.data import create_transform, resolve_data_config

    from workers.catalogue import _timm_entries

    info = next(e for e in _timm_entries() if e.architecture == arch)
    model = timm.create_model(arch, pretrained=False)
    reference = create_transform(**resolve_data_config({}, model=model))
    img = sample_image()
    assert torch.equal(eval_transform(info)(img), reference(img))


@pytest.mark.parametrize("name", ["resnet50.fb_swsl_ig1b_ft_in1k", "convnext_tiny.fb_in22k_ft_in1k_384"])
def test_preprocessing_of_a_timm_tag_equals_timms_own_for_that_tag(name):
    import timm
    from timm.data import create_transform, resolve_data_config

    from dnnprof.catalogue import Catalogue
    from workers.catalogue import _timm_entries

    info = Catalogue({e.name: e for e in _timm_entries()}).resolve(name).info
    reference = create_transform(**resolve_data_config({}, model=timm.create_model(name, pretrained=False)))
    img = sample_image()
    assert torch.equal(eval_transform(info)(img), reference(img))


@pytest.mark.parametrize("arch", ["resnet18", "inception_v3", "efficientnet_b0", "regnet_y_400mf"])
def test_preprocessing_matches_torchvisions_own_for_torchvision_models(arch):
    import torchvision.models as tvm

    from workers.catalogue import _torchvision_entries

    info = next(e for e in _torchvision_entries() if e.architecture == arch)
    reference = tvm.get_model_weights(arch).DEFAULT.transforms()
    img = sample_image()
    assert torch.equal(eval_transform(info)(img), reference(img))
    bigger = eval_transform(info, input_size=info.input_size + 32)(img)
    assert bigger.shape == (3, info.input_size + 32, info.input_size + 32)


def test_caffe_ports_get_bgr_pixels_in_0_255():
    info = ModelInfo(
        name="dnnprof:bninception",
        source="dnnprof",
        architecture="bninception",
        input_size=224,
        mean=(104.0, 117.0, 128.0),
        std=(1.0, 1.0, 1.0),
        input_space="BGR",
        input_range=255.0,
        crop_pct=1.0,
    )
    x = eval_transform(info)(Image.new("RGB", (224, 224), (200, 100, 50)))
    assert x[:, 0, 0].tolist() == pytest.approx([50 - 104.0, 100 - 117.0, 200 - 128.0], abs=1e-3)
