"""The measuring engine on the CPU with random weights (no downloads)."""

from __future__ import annotations

import io
import math
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from dnnprof.contract import ModelInfo, ProfileSettings
from tests.helpers import ROOT
from workers.engine.fingerprint import fingerprint, jetson_power_mode, l4t_release
from workers.engine.memory import is_out_of_memory
from workers.engine.models import build_model, count_params, parameter_file_bytes
from workers.engine.scenario import ScenarioConfig, count_flops, run_profile
from workers.engine.timing import WarmupPolicy, latency_stats, warm_up


def tv_info(name: str) -> ModelInfo:
    from workers.catalogue import _torchvision_entries

    return next(e for e in _torchvision_entries() if e.architecture == name)


@pytest.mark.parametrize(
    "name",
    [
        "resnet18",
        "resnet50",
        "mobilenet_v2",
        "squeezenet1_1",
        "alexnet",
        "googlenet",
        "densenet121",
        "shufflenet_v2_x1_0",
        "vgg11_bn",
        "inception_v3",
        "efficientnet_b0",
        "regnet_y_400mf",
    ],
)
def test_params_and_flops_match_torchvision_published_metadata(name):
    info = tv_info(name)
    model = build_model(info)
    assert count_params(model) == info.published_params
    with torch.inference_mode():
        flops = count_flops(model, torch.randn(1, 3, info.input_size, info.input_size))
    # torchvision publishes GMACs in `_ops`; one multiply-add = 2 FLOPs. Its counter also counts
    # a few element-wise ops (squeeze-excite scaling, pooling) that the paper's convention omits.
    assert flops / 2e9 == pytest.approx(info.published_gmacs, rel=0.02)


def test_parameter_file_size_is_what_torch_save_writes(tmp_path):
    model = build_model(tv_info("resnet18"))
    path = tmp_path / "w.pth"
    torch.save(model.state_dict(), path)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    assert parameter_file_bytes(model) == len(buffer.getvalue())
    # A file differs only in its zip entry names (taken from the file name) and their padding.
    assert parameter_file_bytes(model) == pytest.approx(path.stat().st_size, rel=1e-3)
    assert parameter_file_bytes(model.half()) < 0.51 * path.stat().st_size + 200_000


def test_latency_statistics_from_known_run_times():
    runs = [0.010, 0.012, 0.011, 0.013, 0.014]  # seconds for a batch of 2
    stats = latency_stats(runs, batch_size=2, warmup_runs=3, noisy_cv=0.1)
    per_image = [r * 1000 / 2 for r in runs]
    mean = sum(per_image) / 5
    std = math.sqrt(sum((x - mean) ** 2 for x in per_image) / 4)
    assert stats.mean_ms == pytest.approx(mean)
    assert stats.median_ms == pytest.approx(6.0)
    assert stats.std_ms == pytest.approx(std)
    assert stats.min_ms == pytest.approx(5.0) and stats.max_ms == pytest.approx(7.0)
    assert stats.images_per_s == pytest.approx(1000 / mean)
    assert stats.ci95_high_ms - mean == pytest.approx(2.776445 * std / math.sqrt(5), rel=1e-5)  # t(0.975, 4)
    assert stats.cv == pytest.approx(std / mean) and stats.noisy is True  # cv ~ 0.13
    assert latency_stats([0.01] * 10, 1, 0, 0.1).noisy is False


def test_warm_up_stops_once_times_settle_and_is_bounded():
    class FakeTimer:
        def __init__(self, times):
            self.times = iter(times)

        def time(self, fn, runs):
            return [next(self.times)]

    settling = FakeTimer([5.0, 3.0, 1.0, 1.0, 1.01, 1.0] + [1.0] * 50)
    assert warm_up(lambda: None, settling, WarmupPolicy(max_seconds=1e9)) == 5
    noisy = FakeTimer([1.0, 2.0] * 100)
    assert warm_up(lambda: None, noisy, WarmupPolicy(max_runs=7, max_seconds=1e9)) == 7
    slow = FakeTimer([6.0] * 10)
    assert warm_up(lambda: None, slow, WarmupPolicy(max_seconds=10.0, min_runs=3)) == 2


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.conv(x).mean(dim=(2, 3)))


def tiny_info() -> ModelInfo:
    return ModelInfo(name="test:tiny", source="dnnprof", architecture="tiny", input_size=16)


def tiny_settings(**kw) -> ProfileSettings:
    base = dict(model="test:tiny", device="cpu", batch_sizes=(1, 4), runs=5, precision="fp32", input_size=16)
    base.update(kw)
    return ProfileSettings(**base)


def test_hand_built_model_has_the_flops_and_params_computed_by_hand():
    result = run_profile(tiny_info(), tiny_settings(), ScenarioConfig(device_class="cpu"), model=TinyNet())
    # conv: 16*16 outputs * 8 channels * 27 MACs; fc: 8*10 MACs; 2 FLOPs per MAC.
    assert result.flops == 2 * (16 * 16 * 8 * 27 + 8 * 10)
    assert result.params == 8 * 27 + 8 * 10 + 10
    assert [b.status for b in result.batches] == ["ok", "ok"]
    assert result.timing_method == "perf_counter"
    assert 0 < result.timed_s <= result.wall_s


@pytest.mark.parametrize("precision", ["fp16", "bf16", "amp"])
def test_precisions_run_and_are_recorded(precision):
    result = run_profile(
        tiny_info(),
        tiny_settings(precision=precision, channels_last=True),
        ScenarioConfig(device_class="cpu"),
        model=TinyNet(),
    )
    assert result.settings.precision == precision and result.settings.channels_last
    assert all(b.status == "ok" for b in result.batches)
    if precision in ("fp16", "bf16"):
        assert result.param_file_bytes < result.param_file_bytes_fp32
    else:  # autocast keeps fp32 weights
        assert result.param_file_bytes == result.param_file_bytes_fp32


def test_out_of_memory_batch_is_recorded_and_the_profile_goes_on():
    """Under a memory cap the big batch is an `oom` cell, the smaller ones still measured.
    Runs in its own process: the cap (RLIMIT_AS) is process-wide."""
    code = textwrap.dedent(
        """
        from dnnprof.contract import ModelInfo, ProfileSettings
        from workers.engine.scenario import ScenarioConfig, run_profile
        info = ModelInfo(name="tv:resnet18", source="tv", architecture="resnet18", input_size=224)
        s = ProfileSettings(model=info.name, device="cpu", batch_sizes=(1, 512, 2), runs=2,
                            precision="fp32", input_size=224)
        r = run_profile(info, s, ScenarioConfig(device_class="cpu", memory_limit_mb=1200))
        print([(b.batch_size, b.status) for b in r.batches])
        print(r.batches[1].error)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    first, error = out.stdout.strip().splitlines()[-2:]
    # The batch measured after the OOM is fine: the engine released what the failed one held.
    assert first == "[(1, 'ok'), (512, 'oom'), (2, 'ok')]"
    assert "allocate" in error


def test_out_of_memory_classification():
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to ..."))
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("Kernel size can't be greater than actual input size"))
    assert not is_out_of_memory(ValueError("out of memory"))


def test_cpu_fingerprint_names_the_machine_and_libraries():
    fp = fingerprint("cpu", torch.device("cpu"))
    assert fp.device_class == "cpu" and fp.torch_version == str(torch.__version__)
    assert fp.torchvision_version and fp.timm_version and fp.python_version
    assert fp.cpu_count and fp.cpu_count >= 1 and fp.device_memory_bytes and fp.device_memory_bytes > 0
    assert fp.compute_capability is None and fp.l4t_release is None  # absent, not invented


def test_jetson_release_and_power_mode_parsers(tmp_path):
    release = tmp_path / "nv_tegra_release"
    release.write_text("# R36 (release), REVISION: 3.0, GCID: 36923193, BOARD: generic, EABI: aarch64\n")
    assert l4t_release(release) == "R36.3.0"
    assert l4t_release(tmp_path / "missing") is None
    assert jetson_power_mode("NV Power Mode: MAXN\n0\n") == "MAXN"
    assert jetson_power_mode("") is None


@pytest.mark.gpu
def test_cuda_profile_reports_nvml_process_memory_and_cuda_events():
    info = tv_info("resnet18")
    settings = ProfileSettings(
        model=info.name, device="cuda", batch_sizes=(1, 8), runs=10, precision="fp16", input_size=224
    )
    result = run_profile(info, settings, ScenarioConfig(device_class="cuda"))
    assert result.timing_method == "cuda_events"
    assert result.fingerprint.compute_capability and result.fingerprint.cuda_version
    for batch in result.batches:
        assert batch.status == "ok"
        assert batch.memory.method in ("nvml_process", "nvml_device_delta")  # in a container: the delta
        # The process total includes the CUDA context, so it exceeds what torch reserved.
        assert batch.memory.total_bytes > batch.memory.torch_peak_reserved_bytes
        from workers.engine.peaks import peak_flops

        if peak_flops(result.fingerprint.device_name, "fp16"):
            assert 0 < batch.peak_flops_share < 1


@pytest.mark.gpu
def test_cuda_oom_batch_is_recorded():
    code = textwrap.dedent(
        """
        from dnnprof.contract import ModelInfo, ProfileSettings
        from workers.engine.scenario import ScenarioConfig, run_profile
        info = ModelInfo(name="tv:vgg16", source="tv", architecture="vgg16", input_size=224)
        s = ProfileSettings(model=info.name, device="cuda", batch_sizes=(1, 1024), runs=2,
                            precision="fp32", input_size=224)
        r = run_profile(info, s, ScenarioConfig(device_class="cuda", memory_limit_mb=2048))
        print([(b.batch_size, b.status) for b in r.batches])
        """
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[(1, 'ok'), (1024, 'oom')]"


def test_peak_flops_table_lookup():
    from workers.engine.peaks import peak_flops

    assert peak_flops("NVIDIA H100 80GB HBM3", "bf16") == pytest.approx(989.5e12)
    assert peak_flops("NVIDIA H100 80GB HBM3", "amp") == pytest.approx(989.5e12)
    assert peak_flops("NVIDIA H100 PCIe", "fp32") == pytest.approx(51e12)
    assert peak_flops("NVIDIA A100-SXM4-40GB", "fp16") == pytest.approx(312e12)
    assert peak_flops("Tesla V100-SXM2-16GB", "bf16") is None  # no bf16 on Volta: no figure
    assert peak_flops("Some Future GPU", "fp32") is None


def test_cpu_profile_reports_achieved_flops_but_no_peak_share():
    result = run_profile(tiny_info(), tiny_settings(), ScenarioConfig(device_class="cpu"), model=TinyNet())
    for batch in result.batches:
        assert batch.achieved_flops_per_s == pytest.approx(result.flops * batch.latency.images_per_s)
        assert batch.peak_flops_share is None and batch.energy_per_image_j is None  # absent, not invented


def test_gpu_process_memory_prefers_nvml_per_process_then_the_device_delta_then_torch():
    from workers.engine.memory import process_total

    mib = 1024 * 1024
    # NVML lists our PID (bare metal): its figure, CUDA context included.
    assert process_total(900 * mib, 5000 * mib, 4000 * mib, 500 * mib) == (900 * mib, "nvml_process")
    # In a container NVML lists host PIDs: the device's growth since before our context.
    assert process_total(None, 5000 * mib, 4100 * mib, 500 * mib) == (900 * mib, "nvml_device_delta")
    # Another process freed memory meanwhile: never below what torch itself reserved.
    assert process_total(None, 4300 * mib, 4100 * mib, 500 * mib) == (500 * mib, "nvml_device_delta")
    # No NVML, or no baseline: torch's reserved figure, named as such.
    assert process_total(None, None, None, 500 * mib) == (500 * mib, "torch_peak_reserved")
    assert process_total(None, 5000 * mib, None, 500 * mib) == (500 * mib, "torch_peak_reserved")


def test_no_nvml_baseline_off_cuda():
    from workers.engine.memory import nvml_used_bytes_before_cuda

    assert nvml_used_bytes_before_cuda("cpu") is None
    assert nvml_used_bytes_before_cuda("jetson") is None
