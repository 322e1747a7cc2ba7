"""Name resolution: paper names, prefixes, plain names, timm tags, suggestions."""

from __future__ import annotations

import pytest

from dnnprof.catalogue import Catalogue, UnknownModelError
from dnnprof.paper import PAPER_MODELS, paper_name_for
from workers.catalogue import build_catalogue


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return Catalogue({e.name: e for e in build_catalogue()})


def test_the_paper_has_44_architectures_with_its_input_sizes():
    assert len(PAPER_MODELS) == 44
    sizes = {name: size for name, (_, size) in PAPER_MODELS.items()}
    assert sizes["NASNet-A-Large"] == 331
    assert {n for n, s in sizes.items() if s == 299} == {
        "Inception-v3",
        "Inception-v4",
        "Inception-ResNet-v2",
        "Xception",
    }


@pytest.mark.parametrize(
    ("spelling", "paper"),
    [
        ("SE-ResNeXt-50 (32x4d)", "SE-ResNeXt-50 (32x4d)"),
        ("se_resnext50_32x4d", "SE-ResNeXt-50 (32x4d)"),
        ("densenet-161", "DenseNet-161 (k=48)"),
        ("DenseNet-161 (k=48)", "DenseNet-161 (k=48)"),
        ("vgg-13_bn", "VGG-13_BN"),
        ("NASNet-A-Mobile", "NASNet-A-Mobile"),
        ("dpn68", "DPN-68"),
        ("DualPathNet-98", "DPN-98"),
        ("mobilenet v1", "MobileNet-v1"),
    ],
)
def test_paper_names_are_case_and_punctuation_forgiving(spelling, paper):
    assert paper_name_for(spelling) == paper


def test_all_44_paper_models_resolve_with_the_paper_input_size(catalogue):
    for paper, (qualified, size) in PAPER_MODELS.items():
        info = catalogue.resolve(paper).info
        assert (info.name, info.input_size, info.paper_name) == (qualified, size, paper)


def test_prefixes_plain_names_and_timm_tags(catalogue):
    assert catalogue.resolve("resnet50").info.name == "tv:resnet50"
    assert catalogue.resolve("timm:resnet50").info.name == "timm:resnet50"
    assert catalogue.resolve("tv:resnet50").info.name == "tv:resnet50"
    assert catalogue.resolve("torchvision:resnet50").info.name == "tv:resnet50"
    assert catalogue.resolve("convnext_tiny").info.name == "tv:convnext_tiny"
    assert catalogue.resolve("eva02_tiny_patch14_224").info.source == "timm"  # timm only
    tagged = catalogue.resolve("resnet50.a1_in1k")
    assert tagged.info.name == "timm:resnet50" and tagged.tag == "a1_in1k"
    assert catalogue.resolve("ResNet50").info.name == "tv:resnet50"  # forgiving


@pytest.mark.parametrize("name", ["resnet19", "timm:resnet19", "resnet50.no_such_tag", "tv:legacy_xception"])
def test_unknown_names_raise_with_suggestions(catalogue, name):
    with pytest.raises(UnknownModelError) as info:
        catalogue.resolve(name)
    assert info.value.suggestions


def test_search(catalogue):
    hits = [i.name for i in catalogue.search("resnext50")]
    assert "tv:resnext50_32x4d" in hits
    paper = catalogue.search(paper_only=True, limit=100)
    assert all(i.paper_name for i in paper) and len(paper) == 44


def test_a_timm_tag_resolves_to_its_own_preprocessing_and_head(catalogue):
    """timm feeds pretrained tags differently: the resolved entry is the tag's, as timm gives it."""
    from timm.models import get_pretrained_cfg

    tags = (
        "resnet50.fb_swsl_ig1b_ft_in1k",
        "resnet50.a1_in1k",
        "vit_base_patch16_224.augreg_in21k",
        "convnext_tiny.fb_in22k_ft_in1k_384",  # squashed, not centre-cropped
    )
    for name in tags:
        info = catalogue.resolve(name).info
        cfg = get_pretrained_cfg(name)
        assert info.input_size == cfg.input_size[-1]
        assert (info.crop_pct, info.crop_mode, info.interpolation) == (
            cfg.crop_pct,
            cfg.crop_mode or "center",
            cfg.interpolation,
        )
        assert (info.mean, info.std, info.num_classes) == (tuple(cfg.mean), tuple(cfg.std), cfg.num_classes)
        assert info.tag_configs == {}  # a resolved tag carries no other tag's settings
    # The two resnet50 tags really differ, so the check above tells them apart.
    swsl, a1 = catalogue.resolve("resnet50.fb_swsl_ig1b_ft_in1k").info, catalogue.resolve("resnet50").info
    assert (swsl.crop_pct, swsl.interpolation) != (a1.crop_pct, a1.interpolation)


def test_paper_names_resolve_to_the_papers_weights_plain_names_to_torchvisions_default(catalogue):
    """ResNet-50 of the paper is torchvision's V1 weights (top-1 76.13, crop 0.875), not today's
    default V2 (80.86, crop 0.9655) that put it five points too high in every chart."""
    paper = catalogue.resolve("ResNet-50")
    assert (paper.qualified, paper.tag) == ("tv:resnet50.IMAGENET1K_V1", "IMAGENET1K_V1")
    assert paper.info.published_top1 == pytest.approx(76.13) and paper.info.crop_pct == 0.875
    assert paper.info.weights_url.endswith("resnet50-0676ba61.pth")
    assert paper.info.paper_name == "ResNet-50"
    plain = catalogue.resolve("resnet50")
    assert (plain.qualified, plain.info.default_tag) == ("tv:resnet50", "IMAGENET1K_V2")
    assert plain.info.published_top1 == pytest.approx(80.858) and plain.info.crop_pct == 0.9655
    assert plain.info.paper_name is None  # not the paper's model: another recipe's weights
    # Spelled with the tag, torchvision's way or with the prefix, it is the paper's again.
    assert catalogue.resolve("resnet50.IMAGENET1K_V1").qualified == "tv:resnet50.IMAGENET1K_V1"
    assert catalogue.resolve("tv:resnet50.IMAGENET1K_V1").info.paper_name == "ResNet-50"
    assert catalogue.resolve("MobileNet-v2").qualified == "tv:mobilenet_v2.IMAGENET1K_V1"
    # Where V1 is the default (ResNet-18, the DenseNets, the VGGs), no tag is needed.
    for name, qualified in (("ResNet-18", "tv:resnet18"), ("DenseNet-121", "tv:densenet121")):
        resolved = catalogue.resolve(name)
        assert (resolved.qualified, resolved.info.default_tag) == (qualified, "IMAGENET1K_V1")
    # The accuracies the paper's text quotes, as checks that the right weights are named.
    assert catalogue.resolve("ResNet-34").info.published_top1 == pytest.approx(73.314, abs=0.1)
    assert catalogue.resolve("MobileNet-v2").info.published_top1 == pytest.approx(71.878, abs=0.1)
    with pytest.raises(UnknownModelError):
        catalogue.resolve("tv:resnet50.IMAGENET1K_V9")
