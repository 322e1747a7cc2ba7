"""The 44 architectures of Bianco et al. (2018) by the names the paper uses.

Each maps to a concrete model: torchvision where the paper's weights came from torchvision,
timm's ports of Cadene's ``pretrainedmodels`` (the paper's own zoo, ``legacy_*``) otherwise, and
``dnnprof:`` for the five that neither package has (implemented in ``workers/zoo``). The input
sizes are the paper's (Section IV): 331 NASNet-A-Large; 299 the Inceptions and Xception; 224 the rest.
"""

from __future__ import annotations

import re

PAPER_MODELS: dict[str, tuple[str, int]] = {
    "AlexNet": ("tv:alexnet", 224),
    "BN-Inception": ("dnnprof:bninception", 224),
    "CaffeResNet-101": ("dnnprof:cafferesnet101", 224),
    "DenseNet-121 (k=32)": ("tv:densenet121", 224),
    "DenseNet-161 (k=48)": ("tv:densenet161", 224),
    "DenseNet-169 (k=32)": ("tv:densenet169", 224),
    "DenseNet-201 (k=32)": ("tv:densenet201", 224),
    "DPN-68": ("timm:dpn68", 224),
    "DPN-98": ("timm:dpn98", 224),
    "DPN-131": ("timm:dpn131", 224),
    "FBResNet-152": ("dnnprof:fbresnet152", 224),
    "GoogLeNet": ("tv:googlenet", 224),
    "Inception-ResNet-v2": ("timm:inception_resnet_v2", 299),
    "Inception-v3": ("tv:inception_v3", 299),
    "Inception-v4": ("timm:inception_v4", 299),
    "MobileNet-v1": ("timm:mobilenetv1_100", 224),
    "MobileNet-v2": ("tv:mobilenet_v2", 224),
    "NASNet-A-Large": ("timm:nasnetalarge", 331),
    "NASNet-A-Mobile": ("dnnprof:nasnetamobile", 224),
    "ResNet-18": ("tv:resnet18", 224),
    "ResNet-34": ("tv:resnet34", 224),
    "ResNet-50": ("tv:resnet50", 224),
    "ResNet-101": ("tv:resnet101", 224),
    "ResNet-152": ("tv:resnet152", 224),
    "ResNeXt-101 (32x4d)": ("timm:resnext101_32x4d", 224),
    "ResNeXt-101 (64x4d)": ("timm:resnext101_64x4d", 224),
    "SE-ResNet-50": ("timm:legacy_seresnet50", 224),
    "SE-ResNet-101": ("timm:legacy_seresnet101", 224),
    "SE-ResNet-152": ("timm:legacy_seresnet152", 224),
    "SE-ResNeXt-50 (32x4d)": ("timm:legacy_seresnext50_32x4d", 224),
    "SE-ResNeXt-101 (32x4d)": ("timm:legacy_seresnext101_32x4d", 224),
    "SENet-154": ("timm:legacy_senet154", 224),
    "ShuffleNet": ("dnnprof:shufflenet_v1_g3", 224),
    "SqueezeNet-v1.0": ("tv:squeezenet1_0", 224),
    "SqueezeNet-v1.1": ("tv:squeezenet1_1", 224),
    "VGG-11": ("tv:vgg11", 224),
    "VGG-11_BN": ("tv:vgg11_bn", 224),
    "VGG-13": ("tv:vgg13", 224),
    "VGG-13_BN": ("tv:vgg13_bn", 224),
    "VGG-16": ("tv:vgg16", 224),
    "VGG-16_BN": ("tv:vgg16_bn", 224),
    "VGG-19": ("tv:vgg19", 224),
    "VGG-19_BN": ("tv:vgg19_bn", 224),
    "Xception": ("timm:legacy_xception", 299),
}


#: The top-1 figures the paper's text quotes (Section V-D): checks that a paper name names the
#: weights the paper measured (their published top-1 is within :data:`QUOTED_TOP1_TOLERANCE`).
PAPER_QUOTED_TOP1: dict[str, float] = {
    "ResNet-34": 73.27,
    "MobileNet-v2": 71.81,
    "Xception": 78.79,
    "SE-ResNeXt-50 (32x4d)": 79.11,
    "NASNet-A-Large": 82.50,
}
QUOTED_TOP1_TOLERANCE = 0.5  # points: the paper's own evaluation vs the weights' publisher's

#: The paper's measurement devices, as read-only device targets (its Table 1; Section II).
PAPER_DEVICES: dict[str, dict[str, str | int]] = {
    "paper/titan-xp": {
        "table1_device": "titan_xp",
        "device_name": "NVIDIA Titan X Pascal (Titan Xp), 12 GB; PyTorch, CUDA 9.0, cuDNN 5.1, fp32",
        "memory_bytes": 12 * 10**9,
        "nearest_class": "cuda",
    },
    "paper/jetson-tx1": {
        "table1_device": "jetson_tx1",
        "device_name": "NVIDIA Jetson TX1, 4 GB shared; JetPack 2.3, PyTorch, fp32",
        "memory_bytes": 4 * 10**9,
        "nearest_class": "jetson",
    },
}
PAPER_SOURCE = "bianco2018"

#: Memory facts the paper's text states (Sections I, V-E, V-F; Titan Xp, batch size 1): the floor
#: even the smallest models hold, and the two lines memory follows against parameter size.
PAPER_MEMORY_FACTS = {
    "target": "paper/titan-xp",
    "batch_size": 1,
    "floor_mb": 600.0,
    "fits": [
        {"slope": 1.10, "intercept_mb": 910.0, "families": "VGGs, SE-ResNets, SqueezeNets"},
        {
            "slope": 1.15,
            "intercept_mb": 639.0,
            "families": "ResNets, DPNs, DenseNets, Inceptions, MobileNets",
        },
    ],
    "quoted_mb": {
        "SqueezeNet-v1.0": 943.0,
        "SqueezeNet-v1.1": 921.0,
        "MobileNet-v1": 650.0,
        "MobileNet-v2": 648.0,
    },
}


#: The paper (2018) measured torchvision's first ImageNet weights; torchvision's default for some
#: of its models is now a later recipe (ResNet-50's V2: top-1 80.9, not the paper's 76).
PAPER_TV_WEIGHTS = "IMAGENET1K_V1"


def paper_tag(info) -> str | None:
    """The tag of the paper's weights where they are not the entry's default (``IMAGENET1K_V1``
    for torchvision's ResNet-50, whose default is V2), else None."""
    if (
        info.source == "tv"
        and info.paper_name
        and PAPER_TV_WEIGHTS in info.pretrained_tags
        and info.default_tag != PAPER_TV_WEIGHTS
    ):
        return PAPER_TV_WEIGHTS
    return None


def normalise(name: str) -> str:
    """Case- and punctuation-forgiving key: 'SE-ResNeXt-50 (32x4d)' -> 'seresnext5032x4d'."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _aliases() -> dict[str, str]:
    out: dict[str, str] = {}
    for paper_name in PAPER_MODELS:
        out[normalise(paper_name)] = paper_name
        # "DenseNet-121 (k=32)" is also called "DenseNet-121"; "Inception-v3" also "InceptionV3".
        short = re.sub(r"\s*\(k=\d+\)", "", paper_name)
        out.setdefault(normalise(short), paper_name)
    out.setdefault("dualpathnet68", "DPN-68")
    out.setdefault("dualpathnet98", "DPN-98")
    out.setdefault("dualpathnet131", "DPN-131")
    out.setdefault("shufflenetv1", "ShuffleNet")
    return out


PAPER_ALIASES: dict[str, str] = _aliases()


def paper_name_for(name: str) -> str | None:
    """The paper name that ``name`` spells, forgivingly, or None."""
    return PAPER_ALIASES.get(normalise(name))
