"""The five paper architectures neither torchvision nor timm has, against their published
reference implementations (Cadene's pretrainedmodels; the ShuffleNet paper)."""

from __future__ import annotations

import pytest
import torch

from dnnprof.contract import ModelInfo
from workers import zoo
from workers.engine.flops import count_flops
from workers.engine.models import build_model, count_params

# Parameter counts of the reference implementations (pretrainedmodels' model definitions).
PUBLISHED_PARAMS = {
    "bninception": 11_295_240,
    "cafferesnet101": 44_549_160,
    "fbresnet152": 60_268_520,
    "nasnetamobile": 5_289_978,
}
# Multiply-adds at 224 px from the architecture papers: NASNet-A-Mobile 564 M (Zoph et al.,
# Table 2), ShuffleNet 1x g=3 140 M (Zhang et al., Table 2), BN-Inception ~2 G.
PUBLISHED_MACS = {"nasnetamobile": 564e6, "shufflenet_v1_g3": 140e6, "bninception": 2.0e9}


def macs(name: str) -> float:
    model = zoo.create(name).eval()
    with torch.inference_mode():
        return count_flops(model, torch.randn(1, 3, 224, 224)) / 2


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_parameter_count_matches_the_reference_implementation(name):
    assert count_params(zoo.create(name)) == PUBLISHED_PARAMS[name]


@pytest.mark.parametrize("name", sorted(PUBLISHED_MACS))
def test_multiply_adds_match_the_architecture_papers(name):
    assert macs(name) == pytest.approx(PUBLISHED_MACS[name], rel=0.03)


def test_shufflenet_v1_g3_has_the_paper_stage_widths_and_runs():
    model = zoo.create("shufflenet_v1_g3").eval()
    assert model.last_linear.in_features == 960
    assert 1.8e6 < count_params(model) < 1.95e6
    with torch.inference_mode():
        assert model(torch.randn(2, 3, 224, 224)).shape == (2, 1000)


@pytest.mark.parametrize(
    ("name", "keys"),
    [
        (
            "bninception",
            [
                "conv1_7x7_s2.bias",
                "conv1_7x7_s2_bn.running_var",
                "inception_3c_double_3x3_2_bn.weight",
                "inception_5b_pool_proj.weight",
                "last_linear.weight",
            ],
        ),
        (
            "fbresnet152",
            ["conv1.bias", "layer1.0.downsample.0.bias", "layer4.2.conv3.bias", "last_linear.bias"],
        ),
        ("cafferesnet101", ["conv1.weight", "layer3.22.conv2.weight", "layer2.0.downsample.1.running_mean"]),
    ],
)
def test_module_names_are_those_of_the_published_checkpoints(name, keys):
    state = zoo.create(name).state_dict()
    for key in keys:
        assert key in state, key


def test_caffe_ports_record_their_bgr_0_255_preprocessing_and_weight_urls():
    from workers.catalogue import build_catalogue

    entries = {e.name: e for e in build_catalogue()}
    bn = entries["dnnprof:bninception"]
    assert (bn.input_space, bn.input_range, bn.mean) == ("BGR", 255.0, (104.0, 117.0, 128.0))
    assert bn.paper_name == "BN-Inception" and bn.weights_url.endswith(".pth")
    assert entries["dnnprof:fbresnet152"].input_space == "RGB"
    assert (
        entries["dnnprof:shufflenet_v1_g3"].weights_url is None and entries["dnnprof:shufflenet_v1_g3"].notes
    )


def test_zoo_models_build_through_the_engine_and_unknown_names_are_refused():
    info = ModelInfo(
        name="dnnprof:cafferesnet101", source="dnnprof", architecture="cafferesnet101", input_size=224
    )
    assert count_params(build_model(info)) == PUBLISHED_PARAMS["cafferesnet101"]
    with pytest.raises(KeyError, match="no zoo model"):
        zoo.create("no_such_model")


# Cadene's NASNetAMobile (pretrainedmodels/models/nasnet_mobile.py): the cells by name, in order,
# and the shapes its constructor gives some of their 1x1 convolutions (filters = 1056 / 24 = 44).
CADENE_NASNET_MOBILE_CELLS = [
    "cell_0", "cell_1", "cell_2", "cell_3", "reduction_cell_0",
    "cell_6", "cell_7", "cell_8", "cell_9", "reduction_cell_1",
    "cell_12", "cell_13", "cell_14", "cell_15",
]  # fmt: skip
CADENE_NASNET_MOBILE_SHAPES = {
    "cell_1.conv_prev_1x1.conv.weight": (44, 88, 1, 1),
    "cell_6.conv_1x1.conv.weight": (88, 352, 1, 1),
    "cell_6.path_1.conv.weight": (44, 264, 1, 1),
    "reduction_cell_1.conv_prev_1x1.conv.weight": (176, 528, 1, 1),
    "cell_15.conv_prev_1x1.conv.weight": (176, 1056, 1, 1),
    "conv0.bn.running_var": (32,),
    "last_linear.weight": (1000, 1056),
}


def test_nasnet_mobile_loads_a_checkpoint_named_as_the_published_one(tmp_path):
    """The published checkpoint's layout, written where torch.hub caches the URL, loads through
    the zoo's real pretrained path and gives the same network."""
    source = zoo.create("nasnetamobile").eval()
    checkpoint = {}
    for key, value in source.state_dict().items():
        if key.startswith("cells."):
            index, rest = key[len("cells.") :].split(".", 1)
            key = f"{CADENE_NASNET_MOBILE_CELLS[int(index)]}.{rest}"
        checkpoint[key] = value
    for key, shape in CADENE_NASNET_MOBILE_SHAPES.items():
        assert tuple(checkpoint[key].shape) == shape, key

    url = zoo.REGISTRY["nasnetamobile"].weights_url
    hub_dir = tmp_path / "hub"
    (hub_dir / "checkpoints").mkdir(parents=True)
    torch.save(checkpoint, hub_dir / "checkpoints" / url.rsplit("/", 1)[1])
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(hub_dir))
    try:
        loaded = zoo.create("nasnetamobile", pretrained=True).eval()
    finally:
        torch.hub.set_dir(previous)
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        assert torch.equal(loaded(x), source(x))
