"""FLOPs: one count per model and input size, attention included, the same on every device, and
compared with every published figure the catalogue knows."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import _get_current_dispatch_mode

from dnnprof.contract import ModelInfo, ProfileSettings
from workers.engine.flops import PUBLISHED_TOLERANCE, count_flops, count_model_flops, published_gap
from workers.engine.models import build_model, count_params, empty_weights, parameter_file_bytes
from workers.engine.scenario import ScenarioConfig, run_profile


def tv_entries() -> list[ModelInfo]:
    from workers.catalogue import _torchvision_entries

    return [e for e in _torchvision_entries() if e.published_gmacs]


def tv_info(name: str) -> ModelInfo:
    return next(e for e in tv_entries() if e.architecture == name)


def meta_flops(info: ModelInfo) -> int:
    with empty_weights():
        model = build_model(info)
    return count_flops(model, torch.zeros(1, 3, info.input_size, info.input_size, device="meta"))


@pytest.mark.parametrize("info", tv_entries(), ids=lambda i: i.architecture)
def test_every_torchvision_classifier_counts_its_published_flops(info):
    """torchvision publishes GMACs (`_ops`) for every classifier, CNNs and transformers alike, at
    its own input size: the count must be within 5% of each (1 MAC = 2 FLOPs)."""
    assert meta_flops(info) / 2e9 == pytest.approx(info.published_gmacs, rel=PUBLISHED_TOLERANCE)


@pytest.mark.parametrize("name", ["vit_b_16", "swin_t"])
def test_torchvision_transformer_flops_on_the_cpu_count_attention(name):
    """On a real CPU tensor under inference mode, nn.MultiheadAttention takes its fast path
    (``_native_multi_head_attention``, no formula): vit_b_16 used to count 11.27 of 17.56 GMACs."""
    info = tv_info(name)
    model = build_model(info)
    with torch.inference_mode():  # as the engine used to count: the fast path's condition
        counted = count_model_flops(model, info.input_size, info.published_gmacs)
    assert counted.flops / 2e9 == pytest.approx(info.published_gmacs, rel=0.01)
    assert counted.note is None and "attention counted" in counted.method
    assert counted.flops == meta_flops(info)


def test_timm_vit_counts_the_same_on_the_cpu_as_on_the_meta_device():
    """timm's attention runs SDPA; on a CPU that was the flash kernel, which has no formula
    (vit_tiny: 1.075 GMACs on the CPU against 1.254 where the kernel is counted)."""
    import timm

    model = timm.create_model("vit_tiny_patch16_224").eval()
    on_cpu = count_model_flops(model, 224)
    with empty_weights():
        on_meta = timm.create_model("vit_tiny_patch16_224").eval()
    assert on_cpu.flops == count_flops(on_meta, torch.zeros(1, 3, 224, 224, device="meta"))
    # By hand, ViT-Ti/16 at 224 (width 192, 12 blocks, 3 heads of 64, MLP 768, 197 tokens):
    # patch embedding 196·768·192 = 28,901,376 MACs; per block qkv 197·192·576 = 21,786,624,
    # QKᵀ and AV 2·3·197²·64 = 14,902,656, projection 197·192² = 7,262,208, MLP 2·197·192·768 =
    # 58,097,664, so 102,049,152 a block and 1,224,589,824 for twelve; head 192·1000 = 192,000.
    # 1,253,683,200 MACs (timm's table rounds it to 1.26 GMACs); without attention's two matmuls
    # it is the 1.075 the CPU's flash kernel used to leave.
    assert on_cpu.flops == 2 * 1_253_683_200


def test_the_cpu_flash_attention_kernel_has_a_formula():
    q = torch.randn(1, 3, 197, 64)
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    counter = FlopCounterMode(display=False)
    with counter:
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, q, q)
    assert counter.get_total_flops() == sdpa_flop_count(q.shape, q.shape, q.shape) > 0


@pytest.mark.parametrize("name", ["pit_s_224", "pit_ti_224"])
def test_pit_counts_instead_of_failing(name):
    """PiT's blocks pass a tuple holding a parameter; the counter's module tracker used to fail on
    it ('NoneType' object has no attribute 'next_functions') and with it the whole profile."""
    import timm

    model = timm.create_model(name).eval()
    with torch.inference_mode():
        counted = count_model_flops(model, 224)
    assert counted.flops and counted.flops > 0, counted.note


class CountingRefusedNet(nn.Module):
    """Runs normally, but not under a FLOP counter (a stand-in for a family the counter cannot
    follow)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 4)

    def forward(self, x):
        if _get_current_dispatch_mode() is not None:
            raise RuntimeError("this model cannot be followed by the counter")
        return self.fc(x.mean(dim=(2, 3)))


def test_a_count_that_fails_leaves_flops_null_with_the_reason_and_the_profile_goes_on():
    info = ModelInfo(name="test:refused", source="dnnprof", architecture="refused", input_size=16)
    settings = ProfileSettings(
        model=info.name, device="cpu", batch_sizes=(1, 2), runs=3, precision="fp32", input_size=16
    )
    result = run_profile(info, settings, ScenarioConfig(device_class="cpu"), model=CountingRefusedNet())
    assert result.flops is None
    assert "FLOPs not counted" in result.flops_note and "cannot be followed" in result.flops_note
    assert [b.status for b in result.batches] == ["ok", "ok"]
    assert all(b.achieved_flops_per_s is None for b in result.batches)


def test_a_gap_to_the_published_figure_is_stated():
    assert published_gap(int(2 * 1.0e9), 1.0) is None
    assert published_gap(int(2 * 1.04e9), 1.0) is None
    note = published_gap(int(2 * 0.66e9), 1.0)
    assert note and "-34.0%" in note and "published 1.000 GMACs" in note
    assert published_gap(int(2e9), None) is None


def test_the_profile_states_a_published_gap_and_how_flops_were_counted():
    info = tv_info("resnet18")
    wrong = ModelInfo(**{**{f: getattr(info, f) for f in info.__struct_fields__}, "published_gmacs": 3.0})
    settings = ProfileSettings(
        model=info.name, device="cpu", batch_sizes=(1,), runs=2, precision="fp32", input_size=224
    )
    result = run_profile(wrong, settings, ScenarioConfig(device_class="cpu"))
    assert result.flops / 2e9 == pytest.approx(1.814, rel=0.01)
    assert "from the published 3.000 GMACs" in result.flops_note
    assert result.flops_method.startswith("torch.utils.flop_counter, fp32, batch 1, cpu")


def test_aux_heads_that_eval_never_runs_are_not_counted():
    """Inception-v3's AuxLogits (3.3 M parameters) and GoogLeNet's two aux heads only run in
    training: neither their parameters nor their bytes belong to the profiled model."""
    import torchvision

    inception = build_model(tv_info("inception_v3"))
    with_aux = torchvision.models.inception_v3(aux_logits=True, init_weights=False)
    aux = count_params(with_aux.AuxLogits)
    assert aux > 3_000_000
    assert count_params(inception) == tv_info("inception_v3").published_params - aux == 23_834_568
    assert parameter_file_bytes(inception) < parameter_file_bytes(with_aux) - 4 * aux + 100_000
    googlenet = build_model(tv_info("googlenet"))
    assert googlenet.aux1 is None and googlenet.aux2 is None
    assert count_params(googlenet) == tv_info("googlenet").published_params  # published without them
