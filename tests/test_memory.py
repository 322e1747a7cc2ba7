"""Memory: what the device holds for this batch size, read after autotuning, with the process's
floor apart; the cap that models a smaller device; NVML matched to torch's GPU by UUID."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from dnnprof.contract import MemoryStats, ModelInfo, ProfileSettings
from tests.helpers import ROOT
from workers import nvml
from workers.engine.cells import CellMeasurer, ModelOnDevice
from workers.engine.device import DeviceContext
from workers.engine.energy import EnergyMeter
from workers.engine.memory import is_out_of_memory, process_total
from workers.engine.scenario import ScenarioConfig, run_profile
from workers.engine.timing import Timer, WarmupPolicy

MB = 1e6


def resnet18_profile(batch_sizes, **config) -> object:
    info = ModelInfo(name="tv:resnet18", source="tv", architecture="resnet18", input_size=224)
    settings = ProfileSettings(
        model=info.name, device="cpu", batch_sizes=batch_sizes, runs=2, precision="fp32", input_size=224
    )
    return run_profile(info, settings, ScenarioConfig(device_class="cpu", min_timed_s=0.0, **config))


def test_cpu_memory_is_each_batch_sizes_own_peak_over_a_reported_floor():
    """Measured after batch 32, batch 1 reports what batch 1 needs (not 32's high-water mark), and
    the floor the process held before the model was built is reported apart."""
    first = resnet18_profile((1,))
    after = resnet18_profile((32, 1))
    big, small = (b.memory.total_bytes for b in after.batches)
    alone = first.batches[0].memory.total_bytes
    assert after.memory_floor_bytes and 0 < after.memory_floor_bytes < small < big
    assert after.batches[0].memory.floor_bytes == after.memory_floor_bytes
    model_alone, model_after = alone - first.memory_floor_bytes, small - after.memory_floor_bytes
    assert model_after < model_alone + 0.25 * (big - small), (alone, small, big)
    assert all(b.memory.method == "peak_rss" for b in after.batches)


def test_cpu_floor_does_not_count_heap_an_earlier_user_freed():
    """A process that held and freed 1 GB of small blocks before (glibc keeps them) reports the
    floor it holds now, below the batch's own peak (CI saw a floor 160 MB above it)."""
    junk = [torch.ones(4000) for _ in range(60000)]
    del junk
    profile = resnet18_profile((1,))
    assert 0 < profile.memory_floor_bytes < profile.batches[0].memory.total_bytes


class CountingNet(nn.Module):
    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        self.log.append("forward")
        return self.fc(x.mean(dim=(2, 3)))


class RecordingProbe:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def prepare(self) -> None:
        self.log.append("prepare")

    def read(self) -> MemoryStats:
        self.log.append("read")
        return MemoryStats(total_bytes=1, method="recording")


def test_memory_is_the_peak_over_warm_up_after_the_first_call():
    """cuDNN autotunes at a shape's first call with the cache empty: a reading across it took its
    largest trial workspace for the batch's memory. The order must be: the first call, then
    (cache freed, peaks reset) the warm-up, its peak read, then the timed runs. No forward of its
    own for the memory: the warm-up's steady runs hold what one does (issue 29)."""
    log: list[str] = []
    settings = ProfileSettings(
        model="test:c", device="cpu", batch_sizes=(2,), runs=4, precision="fp32", input_size=8
    )
    config = ScenarioConfig(device_class="cpu", warmup=WarmupPolicy(min_runs=3, min_seconds=0), min_timed_s=0)
    ctx = DeviceContext("cpu", torch.device("cpu"), RecordingProbe(log), 123, None, Timer())
    prepared = ModelOnDevice(CountingNet(log), "fp32", torch.float32, torch.contiguous_format, 8)
    measurer = CellMeasurer(prepared, ctx, settings, config, 0)
    measured = measurer.measure(2)
    assert measured.status == "ok", measured.error
    assert measured.first_call_s is not None and measured.warmup_runs >= 1
    # The first (cold) call, timed apart as first_call_s, then the warm-up under the probe.
    read_at = log.index("read")
    assert read_at >= 3 and log[:read_at] == ["forward", "prepare"] + ["forward"] * (read_at - 2)
    # Then forwards only: the timed runs (every attempt's, if a noisy block was measured again),
    # and, where a block's first run did not settle the warm-up, that block and the warm-up after.
    assert log.count("read") == 1 and set(log[read_at + 1 :]) == {"forward"}
    timed = sum(a.runs for a in measured.attempts if a.settled)
    assert len(log) - 3 == measured.warmup_runs + timed  # less the first call, prepare and read
    assert measured.memory.floor_bytes == 123


def test_the_cpu_cap_is_on_resident_memory_the_figure_cells_report():
    """DNNPROF_MEMORY_LIMIT_MB models a smaller device: a cell that needs more than the cap (its
    reported total: libraries, model and activations) is `oom`, and every `ok` cell fits under it.
    It used to cap address space over the process's start, which let a 1.5 GB batch through a
    1200 MB cap and failed on arenas and thread stacks that are reserved, never touched. Runs in
    its own process: the cap watches the whole process."""
    code = textwrap.dedent(
        """
        import resource
        from tests.test_memory import resnet18_profile
        r = resnet18_profile((1, 64, 512, 2), memory_limit_mb=1200)
        print([(b.batch_size, b.status) for b in r.batches])
        print(max(b.memory.total_bytes for b in r.batches if b.status == "ok"))
        print(r.batches[2].error)
        print(resource.getrlimit(resource.RLIMIT_AS)[0] == resource.RLIM_INFINITY)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    cells, largest_ok, error, no_address_cap = out.stdout.strip().splitlines()[-4:]
    # The batch measured after an OOM is fine: the engine released what the failed one held.
    assert cells == "[(1, 'ok'), (64, 'oom'), (512, 'oom'), (2, 'ok')]"
    assert int(largest_ok) <= 1200 * 1024 * 1024
    assert "cannot allocate within the memory cap" in error and "DNNPROF_MEMORY_LIMIT_MB=1200" in error
    assert no_address_cap == "True"


def test_out_of_memory_classification():
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to ..."))
    assert is_out_of_memory(MemoryError())
    # cuBLAS and cuDNN report their own allocation failures, not torch's OOM type.
    assert is_out_of_memory(
        RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`")
    )
    assert is_out_of_memory(RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"))
    assert not is_out_of_memory(RuntimeError("Kernel size can't be greater than actual input size"))
    assert not is_out_of_memory(RuntimeError("CUDA error: CUBLAS_STATUS_EXECUTION_FAILED"))
    assert not is_out_of_memory(ValueError("out of memory"))


def test_gpu_process_memory_prefers_nvml_per_process_then_the_device_delta_then_torch():
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


class FakeNvml:
    """A host of four GPUs as NVML enumerates them (PCI order). No GPU here: this stands in for
    the library, to check which of its devices we pick."""

    def __init__(self) -> None:
        self.uuids = [f"GPU-0000000{i}-aaaa-bbbb-cccc-dddddddddddd" for i in range(4)]
        self.used = [100, 200, 300, 400]

    def nvmlDeviceGetCount(self) -> int:
        return 4

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        if not 0 <= index < 4:
            raise ValueError(index)
        return index

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return self.uuids[handle]

    def nvmlDeviceGetMemoryInfo(self, handle: int):
        return type("Memory", (), {"used": self.used[handle]})()


def test_nvml_handles_are_matched_to_torch_by_uuid_not_by_index():
    fake = FakeNvml()
    # Under CUDA_VISIBLE_DEVICES=3 torch's device 0 is the host's GPU 3, not NVML's index 0.
    assert nvml.visible_handle(fake, 0, env={"CUDA_VISIBLE_DEVICES": "3"}) == 3
    assert nvml.visible_handle(fake, 1, env={"CUDA_VISIBLE_DEVICES": "3"}) is None
    assert nvml.visible_handle(fake, 0, env={"CUDA_VISIBLE_DEVICES": fake.uuids[2]}) == 2
    assert nvml.visible_handle(fake, 0, env={}) == 0
    # After CUDA starts, torch reports the UUID without NVML's "GPU-" prefix.
    assert nvml.handle_by_uuid(fake, "00000003-aaaa-bbbb-cccc-dddddddddddd") == 3
    assert nvml.handle_by_uuid(fake, "ffffffff-aaaa-bbbb-cccc-dddddddddddd") is None
    # The baseline is read for every GPU, to be picked by that UUID once the context exists.
    baseline = nvml.used_bytes_by_uuid(fake)
    assert baseline[nvml.normalise_uuid(fake.uuids[3])] == 400 and len(baseline) == 4
    assert nvml.throttle_reasons(0x4 | 0x40) == ["sw_power_cap", "hw_thermal_slowdown"]


def test_energy_needs_a_window_of_a_second():
    readings = iter([10.0, 10.5])
    short = EnergyMeter(read=lambda: next(readings), available=True).window()
    short.start()
    joules, seconds = short.stop()
    assert joules is None and seconds < 1.0  # too short a window for the counter: no figure

    clock = iter([0.0, 1.5])
    readings = iter([10.0, 25.0])
    window = EnergyMeter(read=lambda: next(readings), available=True, clock=lambda: next(clock)).window()
    window.start()
    joules, seconds = window.stop()
    assert joules == pytest.approx(15.0) and seconds == pytest.approx(1.5)


@pytest.mark.gpu
def test_cuda_memory_is_read_after_autotuning_and_holds_the_context():
    info = ModelInfo(name="tv:resnet50", source="tv", architecture="resnet50", input_size=224)
    settings = ProfileSettings(
        model=info.name, device="cuda", batch_sizes=(1, 2, 4, 8), runs=10, precision="fp32", input_size=224
    )
    result = run_profile(info, settings, ScenarioConfig(device_class="cuda"))
    totals = [b.memory.total_bytes for b in result.batches]
    assert result.memory_floor_bytes and all(t > result.memory_floor_bytes for t in totals)
    # No false step between batch 1 and 2 (cuDNN's trial workspace): growth is the activations'.
    assert totals[1] - totals[0] < 0.5 * (totals[3] - totals[0]) + 64 * MB
    assert result.fingerprint.cudnn_benchmark is True and result.fingerprint.device_uuid
