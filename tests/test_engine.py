"""The measuring engine on the CPU with random weights (no downloads)."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from dnnprof.contract import ModelInfo, ProfileSettings
from tests.helpers import ROOT
from workers import aggregate
from workers.engine.cells import CellMeasurer, ModelOnDevice
from workers.engine.device import DeviceContext, PrecisionUnsupportedError
from workers.engine.fingerprint import fingerprint, jetson_power_mode, l4t_release
from workers.engine.models import build_model, count_params, parameter_file_bytes
from workers.engine.scenario import ScenarioConfig, run_profile
from workers.engine.timing import Timer, WarmupPolicy


def tv_info(name: str) -> ModelInfo:
    from workers.catalogue import _torchvision_entries

    return next(e for e in _torchvision_entries() if e.architecture == name)


@pytest.mark.parametrize(
    "name", ["resnet18", "mobilenet_v2", "densenet121", "shufflenet_v2_x1_0", "vgg11_bn", "regnet_y_400mf"]
)
def test_params_match_torchvision_published_metadata(name):
    info = tv_info(name)
    assert count_params(build_model(info)) == info.published_params


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


@pytest.mark.parametrize("precision", ["bf16", "amp"])
def test_precisions_run_and_are_recorded(precision):
    result = run_profile(
        tiny_info(),
        tiny_settings(precision=precision, channels_last=True),
        ScenarioConfig(device_class="cpu"),
        model=TinyNet(),
    )
    assert result.settings.precision == precision and result.settings.channels_last
    assert all(b.status == "ok" for b in result.batches)
    if precision == "bf16":
        assert result.param_file_bytes < result.param_file_bytes_fp32
        assert result.fingerprint.autocast_dtype is None
    else:  # autocast keeps fp32 weights, computing in bf16 on a CPU
        assert result.param_file_bytes == result.param_file_bytes_fp32
        assert result.fingerprint.autocast_dtype == "bfloat16"


def test_fp16_on_a_cpu_is_refused_with_the_reason():
    with pytest.raises(PrecisionUnsupportedError, match="CPUs have no fast fp16 kernels"):
        run_profile(
            tiny_info(), tiny_settings(precision="fp16"), ScenarioConfig(device_class="cpu"), model=TinyNet()
        )


def test_cpu_fingerprint_names_the_machine_and_libraries():
    fp = fingerprint("cpu", torch.device("cpu"))
    assert fp.device_class == "cpu" and fp.torch_version == str(torch.__version__)
    assert fp.torchvision_version and fp.timm_version and fp.python_version
    assert fp.cpu_count and fp.cpu_count >= 1 and fp.device_memory_bytes and fp.device_memory_bytes > 0
    assert fp.compute_capability is None and fp.l4t_release is None  # absent, not invented
    assert fp.cudnn_benchmark is None and fp.gpu_clocks is None and fp.device_uuid is None


def test_a_profile_records_the_threads_affinity_and_numerics_it_ran_with():
    result = run_profile(tiny_info(), tiny_settings(), ScenarioConfig(device_class="cpu"), model=TinyNet())
    fp = result.fingerprint
    assert fp.torch_threads == torch.get_num_threads() and fp.threads_policy
    assert fp.cpu_affinity and set(fp.cpu_affinity) <= set(range(fp.cpu_count))
    assert fp.float32_matmul_precision in ("highest", "high", "medium")


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
        from workers.peaks import peak_flops

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


#: Dense (no sparsity) peaks from the vendors' data sheets, written here from the documents
#: themselves rather than from the table under test. TFLOP/s.
DATASHEETS = [
    # NVIDIA H100 Tensor Core GPU datasheet (2023): SXM FP32 67, BF16/FP16 1,979 with sparsity.
    ("NVIDIA H100 80GB HBM3", "fp32", 67.0),
    ("NVIDIA H100 80GB HBM3", "bf16", 1979 / 2),
    ("NVIDIA H100 80GB HBM3", "amp", 1979 / 2),
    # Same datasheet, PCIe: FP32 51, FP16 1,513 with sparsity.
    ("NVIDIA H100 PCIe", "fp32", 51.0),
    ("NVIDIA H100 PCIe", "fp16", 1513 / 2),
    # NVIDIA H200 datasheet (2024): SXM FP32 67, FP16 1,979 with sparsity.
    ("NVIDIA H200", "fp16", 1979 / 2),
    # NVIDIA A100 datasheet: FP32 19.5, FP16 Tensor 312 (624 with sparsity).
    ("NVIDIA A100-SXM4-40GB", "fp16", 312.0),
    ("NVIDIA A100-SXM4-40GB", "fp32", 19.5),
    # NVIDIA L4 datasheet: FP32 30.3, FP16 Tensor 242 with sparsity.
    ("NVIDIA L4", "fp32", 30.3),
    ("NVIDIA L4", "fp16", 242 / 2),
    # NVIDIA L40 datasheet: FP32 90.5, FP16 Tensor 181.05 (362.1 with sparsity). Not the L4.
    ("NVIDIA L40", "fp32", 90.5),
    ("NVIDIA L40", "fp16", 181.05),
    # NVIDIA L40S datasheet: FP32 91.6, BF16 Tensor 362.05 (733 with sparsity).
    ("NVIDIA L40S", "fp32", 91.6),
    ("NVIDIA L40S", "bf16", 362.05),
    # NVIDIA V100 datasheet (SXM2): FP32 15.7, Tensor 125.
    ("Tesla V100-SXM2-16GB", "fp32", 15.7),
    ("Tesla V100-SXM2-16GB", "fp16", 125.0),
    # NVIDIA TITAN Xp (2017): 12.1 TFLOPS FP32.
    ("NVIDIA TITAN Xp", "fp32", 12.1),
]


@pytest.mark.parametrize(("device", "precision", "tflops"), DATASHEETS)
def test_peak_flops_match_the_vendor_datasheets(device, precision, tflops):
    from workers.peaks import peak_flops

    assert peak_flops(device, precision) == pytest.approx(tflops * 1e12, rel=0.01)


def test_peak_flops_unknown_devices_and_precisions_have_no_figure():
    from workers.peaks import peak_flops

    assert peak_flops("Tesla V100-SXM2-16GB", "bf16") is None  # no bf16 on Volta: no figure
    assert peak_flops("Some Future GPU", "fp32") is None
    assert peak_flops("NVIDIA L40G", "fp32") is None  # a name that merely starts like the L40


def test_a_batch_size_that_fails_is_an_error_cell_and_the_profile_goes_on():
    class FailsAtTwo(TinyNet):
        def forward(self, x):
            if x.shape[0] == 2:
                raise RuntimeError("this kernel has no batch-2 variant")
            return super().forward(x)

    result = run_profile(
        tiny_info(),
        tiny_settings(batch_sizes=(1, 2, 4)),
        ScenarioConfig(device_class="cpu"),
        model=FailsAtTwo(),
    )
    assert [b.status for b in result.batches] == ["ok", "error", "ok"]
    assert result.batches[1].error == "RuntimeError: this kernel has no batch-2 variant"
    assert result.batches[1].latency is None and result.complete


class ScriptedBlocksTimer(Timer):
    """Single runs (the first call, the warm-up) take 10 ms; blocks of timed runs are given."""

    def __init__(self, *blocks: list[float]):
        self.blocks = list(blocks)
        self.timed = 0

    def time(self, fn, runs):
        fn()
        return [0.01] * runs

    def time_for(self, fn, runs, min_seconds):
        self.timed += 1
        fn()
        return self.blocks.pop(0)


def test_a_noisy_block_of_runs_is_measured_again_and_every_attempt_is_recorded():
    settings = tiny_settings(batch_sizes=(1,), runs=4)
    config = ScenarioConfig(device_class="cpu", warmup=WarmupPolicy(min_seconds=0), max_attempts=3)
    from workers.engine.memory import CpuMemoryProbe

    # The first block of timed runs was stretched by another process; the second is clean.
    timer = ScriptedBlocksTimer([0.01, 0.2, 0.01, 0.01], [0.01, 0.0101, 0.0099, 0.01])
    ctx = DeviceContext("cpu", torch.device("cpu"), CpuMemoryProbe(), None, None, timer)
    prepared = ModelOnDevice(TinyNet(), "fp32", torch.float32, torch.contiguous_format, 16)
    measurer = CellMeasurer(prepared, ctx, settings, config, 0)
    cell = measurer.measure(1)
    assert timer.timed == 2 and len(cell.attempts) == 2
    assert cell.attempts[0].cv > 0.1 >= cell.attempts[1].cv
    assert cell.run_seconds == [0.01, 0.0101, 0.0099, 0.01]  # the clean block is the one kept
    assert all(a.host is not None for a in cell.attempts)


def measure_one(timer: Timer):
    """Batch size 1, 4 runs, no least block time: the warm-up leaves its window for the first
    timed run to complete (10 ms runs, a tenth of a 0 s block or more)."""
    from workers.engine.memory import CpuMemoryProbe

    settings = tiny_settings(batch_sizes=(1,), runs=4)
    config = ScenarioConfig(
        device_class="cpu", warmup=WarmupPolicy(min_seconds=0), min_timed_s=0, max_attempts=1
    )
    ctx = DeviceContext("cpu", torch.device("cpu"), CpuMemoryProbe(), None, None, timer)
    prepared = ModelOnDevice(TinyNet(), "fp32", torch.float32, torch.contiguous_format, 16)
    return CellMeasurer(prepared, ctx, settings, config, 0).measure(1)


def test_runs_at_a_blocks_head_that_do_not_settle_the_warm_up_are_warm_up_and_the_block_is_topped_up():
    """Issue 29: the first timed run completes the warm-up's window (10 ms, 10 ms, then it).
    A 50 ms first run does not; the first window to settle ends at the block's 4th run (10, 10,
    10 ms after the 50): the 3 runs before it were warm-up, dropped, and 3 more timed."""
    timer = ScriptedBlocksTimer([0.05, 0.01, 0.01, 0.01], [0.01, 0.0101, 0.0099])
    cell = measure_one(timer)
    assert timer.timed == 2 and cell.run_seconds == [0.01, 0.01, 0.0101, 0.0099]
    [attempt] = cell.attempts
    assert attempt.settled and attempt.warm_up_runs == 3 and attempt.runs == 4
    assert cell.warmup_runs == 1 + 3 and cell.warmup_converged  # 1 after the first call, 3 at the head
    # What the cost figures call timed: the runs kept, not those that were warm-up.
    assert aggregate.timed_seconds(cell) == pytest.approx(sum(cell.run_seconds))


def test_a_block_in_which_no_window_settles_is_warm_up_and_is_timed_again():
    """No three runs in a row of the block agree: all of it was warm-up (recorded, not kept);
    the warm-up goes on from its times until three runs agree (10 ms x 3), and the next block is
    timed. It spends none of max_attempts (1 here)."""
    timer = ScriptedBlocksTimer([0.05, 0.02, 0.05, 0.02], [0.01, 0.0101, 0.0099, 0.01])
    cell = measure_one(timer)
    assert timer.timed == 2 and [a.settled for a in cell.attempts] == [False, True]
    assert cell.attempts[0].runs == 0 and cell.attempts[0].warm_up_runs == 4
    assert cell.run_seconds == [0.01, 0.0101, 0.0099, 0.01]
    # 1 after the first call, the 4 of the block, 3 more until 0.02, 0.01, 0.01 gave way to 3 x 0.01
    assert cell.warmup_runs == 1 + 4 + 3 and cell.warmup_converged
    assert aggregate.timed_seconds(cell) == pytest.approx(sum(cell.run_seconds))


def test_cpu_profile_reports_achieved_flops_but_no_peak_share():
    result = run_profile(tiny_info(), tiny_settings(), ScenarioConfig(device_class="cpu"), model=TinyNet())
    for batch in result.batches:
        assert batch.achieved_flops_per_s == pytest.approx(result.flops * batch.latency.images_per_s)
        assert batch.peak_flops_share is None and batch.energy_per_image_j is None  # absent, not invented


def test_no_nvml_baseline_off_cuda():
    from workers.engine.memory import nvml_baseline

    assert nvml_baseline("cpu") == {}
    assert nvml_baseline("jetson") == {}
