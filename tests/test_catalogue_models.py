"""Every model in the catalogue profiles, in the form it is deployed (issue: PiT failed in the FLOP
counter, RepVGG was measured unfused). The same path as ``bench/catalogue_sweep.py`` (which runs
the whole catalogue) over one model of every timm model module: a new family that breaks
building, counting or running is caught here."""

from __future__ import annotations

import pytest
import timm
from timm.models._registry import _model_to_module

from bench.catalogue_sweep import check_model
from dnnprof.contract import ModelInfo, ProfileSettings
from workers.catalogue import _timm_entries
from workers.engine.scenario import ScenarioConfig, run_profile

#: The smallest model of each timm module (by parameters x input area, counted on the meta
#: device once); modules timm adds later are sampled by their first model.
SAMPLE = {
    "beit": "beit_base_patch16_224",
    "byoanet": "halonet_h1",
    "byobnet": "test_byobnet",
    "cait": "cait_xxs24_224",
    "coat": "coat_tiny",
    "convit": "convit_tiny",
    "convmixer": "convmixer_768_32",
    "convnext": "test_convnext",
    "cpubone": "cpubone_nano",
    "crossvit": "crossvit_tiny_240",
    "csatv2": "csatv2",
    "cspnet": "cs3darknet_focus_s",
    "cspnext": "cspnext_tiny",
    "davit": "davit_tiny",
    "deepseek_vit": "deepseek_vit_412m",
    "deit": "deit_tiny_patch16_224",
    "densenet": "densenet121",
    "dla": "dla46x_c",
    "dpn": "dpn48b",
    "edgenext": "edgenext_xx_small",
    "efficientformer": "efficientformer_l1",
    "efficientformer_v2": "efficientformerv2_s0",
    "efficientnet": "test_efficientnet",
    "efficientvim": "efficientvim_m1",
    "efficientvit_mit": "efficientvit_b0",
    "efficientvit_msra": "efficientvit_m0",
    "eva": "eva02_tiny_patch14_224",
    "fasternet": "fasternet_t0",
    "fastvit": "fastvit_t8",
    "focalnet": "focalnet_tiny_srf",
    "gcvit": "gcvit_xxtiny",
    "gemma4_vit": "gemma4_vit_167m",
    "ghostnet": "ghostnet_050",
    "hardcorenas": "hardcorenas_b",
    "hgnet": "hgnetv2_b0",
    "hiera": "hiera_tiny_224",
    "hieradet_sam2": "hieradet_small",
    "hrnet": "hrnet_w18_small",
    "iformer": "iformer_t",
    "inception_next": "inception_next_atto",
    "inception_resnet_v2": "inception_resnet_v2",
    "inception_v3": "inception_v3",
    "inception_v4": "inception_v4",
    "lcnetv2": "lcnetv2_small",
    "levit": "levit_128s",
    "lowformer": "lowformer_b0",
    "mambaout": "test_mambaout",
    "maxxvit": "test_coatnet",
    "metaformer": "poolformerv2_s12",
    "mlp_mixer": "gmlp_ti16_224",
    "mobilenetv3": "mobilenetv3_small_050",
    "mobilenetv5": "mobilenetv5_base",
    "mobilevit": "mobilevit_xxs",
    "mvitv2": "mvitv2_tiny",
    "naflexvit": "naflexvit_base_patch16_parfac_gap",
    "nasnet": "nasnetalarge",
    "nest": "nest_tiny",
    "nextvit": "nextvit_small",
    "nfnet": "test_nfnet",
    "pit": "pit_ti_224",
    "pnasnet": "pnasnet5large",
    "pvt_v2": "pvt_v2_b0",
    "qwen3_vit": "qwen3_vit_88m",
    "rdnet": "rdnet_tiny",
    "regnet": "regnetx_002",
    "repghost": "repghostnet_050",
    "repvit": "repvit_m1",
    "res2net": "res2next50",
    "resnest": "resnest14d",
    "resnet": "test_resnet",
    "resnetv2": "resnetv2_18",
    "rexnet": "rexnet_100",
    "selecsls": "selecsls42",
    "senet": "legacy_seresnet18",
    "sequencer": "sequencer2d_s",
    "shvit": "shvit_s1",
    "sknet": "skresnet18",
    "starnet": "starnet_s050",
    "swiftformer": "swiftformer_xs",
    "swin_transformer": "swin_tiny_patch4_window7_224",
    "swin_transformer_v2": "swinv2_tiny_window16_256",
    "swin_transformer_v2_cr": "swinv2_cr_tiny_224",
    "tiny_vit": "tiny_vit_5m_224",
    "tnt": "tnt_s_legacy_patch16_224",
    "tresnet": "tresnet_m",
    "twins": "twins_svt_small",
    "vgg": "vgg11",
    "visformer": "visformer_tiny",
    "vision_transformer": "test_vit",
    "vision_transformer_relpos": "test_vit_relpos",
    "vision_transformer_sam": "samvit_base_patch16_224",
    "volo": "volo_d1_224",
    "vovnet": "ese_vovnet19b_slim_dw",
    "xception": "legacy_xception",
    "xception_aligned": "xception41p",
    "xcit": "xcit_nano_12_p8_224",
    "vision_transformer_hybrid": "vit_small_r26_s32_224",
}
#: Above this, the CI sample checks parameters and FLOPs on the meta device but runs no forward
#: pass (the catalogue sweep runs those).
RUN_UP_TO_PARAMS = 100_000_000


@pytest.fixture(scope="module")
def timm_catalogue() -> dict[str, ModelInfo]:
    return {e.architecture: e for e in _timm_entries()}


def sample() -> list[str]:
    modules = sorted(set(_model_to_module.get(m, "?") for m in timm.list_models()))
    return [SAMPLE.get(m) or sorted(timm.list_models(module=m))[0] for m in modules]


def test_the_sample_covers_every_timm_model_module():
    modules = {_model_to_module.get(m) for m in timm.list_models()}
    assert {_model_to_module[a] for a in sample()} == modules


@pytest.mark.parametrize("arch", sample())
def test_one_model_of_every_timm_module_builds_counts_and_runs(arch, timm_catalogue, monkeypatch):
    import bench.catalogue_sweep as sweep

    monkeypatch.setattr(sweep, "MAX_PARAMS_TO_RUN", RUN_UP_TO_PARAMS)
    check = check_model(timm_catalogue[arch])
    assert check.status in ("ok", "counted"), f"{check.exception}: {check.error}"
    assert check.params and check.params > 0
    assert check.flops and check.flops > 0, check.flops_note


def timm_info(arch: str) -> ModelInfo:
    return next(e for e in _timm_entries() if e.architecture == arch)


def profile(info: ModelInfo, **settings) -> object:
    base = dict(
        model=info.name, device="cpu", batch_sizes=(1,), runs=2, precision="fp32", input_size=info.input_size
    )
    return run_profile(info, ProfileSettings(**{**base, **settings}), ScenarioConfig(device_class="cpu"))


def test_repvgg_is_profiled_in_its_deployed_form_unless_asked_for_the_training_form():
    """timm:repvgg_a2 is deployed fused (25.5 M parameters, 5.12 GMACs); its training form has
    28.2 M and 5.69, and is slower: that form only on request."""
    info = timm_info("repvgg_a2")
    assert info.reparameterizable
    deployed = profile(info, reparameterize=True)
    assert deployed.form == "deployed"
    # Ding et al., "RepVGG: Making VGG-style ConvNets Great Again" (CVPR 2021), Table 4: RepVGG-A2
    # as deployed has 25.49 M parameters and 5.12 B theoretical FLOPs (multiply-adds, so GMACs).
    assert deployed.params == pytest.approx(25.5e6, rel=0.005)
    assert deployed.flops / 2e9 == pytest.approx(5.12, rel=0.005)
    training = profile(info, reparameterize=False)
    assert training.form == "as built"
    assert training.params == pytest.approx(28.2e6, rel=0.005)
    assert training.flops / 2e9 == pytest.approx(5.69, rel=0.005)


def test_models_without_a_fused_form_are_not_reparameterizable():
    assert not timm_info("resnet18").reparameterizable
    assert {"repvgg_a2", "mobileone_s0", "fastvit_t8", "repvit_m1", "repghostnet_050"} <= {
        e.architecture for e in _timm_entries() if e.reparameterizable
    }


@pytest.mark.parametrize("arch", ["pit_ti_224", "pit_s_224"])
def test_pit_profiles_with_its_flops(arch):
    result = profile(timm_info(arch))
    assert result.flops and result.flops_note is None
    assert [b.status for b in result.batches] == ["ok"]


def test_a_transformer_runs_at_an_input_size_other_than_its_own():
    """ViTs are built for an image size: a request for another one builds them for it."""
    result = profile(timm_info("vit_tiny_patch16_224"), input_size=320)
    assert result.input_size == 320 and result.batches[0].status == "ok"
    assert result.flops > profile(timm_info("vit_tiny_patch16_224")).flops * 1.9
