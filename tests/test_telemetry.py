"""Jetson code paths (no NVML, unified memory, INA3221 power, tegrastats) against recorded sample
trees of those interfaces (tests/data), and the worker's metrics collector."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from workers.devices import is_jetson
from workers.engine.fingerprint import jetson_power_mode, l4t_release
from workers.telemetry import JetsonSysfs, PowerIntegrator, WorkerCollector, parse_tegrastats

DATA = Path(__file__).parent / "data"
ORIN = DATA / "jetson_orin_nano"
NANO = DATA / "jetson_nano"


def test_jetson_is_recognised_with_its_release_and_power_mode():
    assert is_jetson(ORIN / "etc/nv_tegra_release", ORIN / "proc/device-tree/model")
    assert is_jetson(ORIN / "missing", ORIN / "proc/device-tree/model")  # model file alone
    assert not is_jetson(DATA / "missing", DATA / "missing")
    assert l4t_release(ORIN / "etc/nv_tegra_release") == "R36.4.0"
    assert l4t_release(NANO / "etc/nv_tegra_release") == "R32.7.1"
    assert jetson_power_mode((ORIN / "nvpmodel-q.txt").read_text()) == "15W"
    assert jetson_power_mode((NANO / "nvpmodel-q.txt").read_text()) == "MAXN"


def test_orin_sysfs_hwmon_rails_load_temperatures_and_unified_memory():
    sysfs = JetsonSysfs(ORIN)
    assert sysfs.gpu_load_ratio() == pytest.approx(0.412)
    assert sysfs.temperatures_c() == {"cpu-thermal": 48.5, "gpu-thermal": 47.25, "tj-thermal": 48.562}
    rails = sysfs.power_rails_w()
    assert set(rails) == {"VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"}  # in4 has no label: not a rail
    assert rails["VDD_IN"] == pytest.approx(5.072 * 1.120)
    assert sysfs.input_power_w() == pytest.approx(5.68064)
    assert sysfs.memory_bytes() == (7824272 * 1024, (7824272 - 5120000) * 1024)


def test_nano_sysfs_iio_rails():
    sysfs = JetsonSysfs(NANO)
    assert sysfs.gpu_load_ratio() == pytest.approx(0.998)
    assert sysfs.power_rails_w() == {"POM_5V_IN": 3.46, "POM_5V_GPU": 1.207, "POM_5V_CPU": 0.612}
    assert sysfs.input_power_w() == 3.46


def test_a_machine_without_those_interfaces_reports_nothing(tmp_path):
    sysfs = JetsonSysfs(tmp_path)
    assert sysfs.gpu_load_ratio() is None and sysfs.temperatures_c() == {}
    assert sysfs.power_rails_w() == {} and sysfs.input_power_w() is None and sysfs.memory_bytes() is None


def test_tegrastats_line():
    parsed = parse_tegrastats((ORIN / "tegrastats.txt").read_text())
    assert parsed["ram_bytes"] == (2702 * 2**20, 7620 * 2**20)
    assert parsed["gpu_load_ratio"] == pytest.approx(0.41)
    assert parsed["temperatures_c"]["gpu"] == 47.25 and parsed["temperatures_c"]["tj"] == 48.562
    assert parsed["rails_w"] == {"VDD_IN": 5.682, "VDD_CPU_GPU_CV": 1.612, "VDD_SOC": 2.233}


def test_power_integrator_turns_the_input_rail_into_joules():
    sysfs = JetsonSysfs(ORIN)
    with PowerIntegrator(sysfs.input_power_w, period_s=0.01) as meter:
        started = time.perf_counter()
        time.sleep(0.3)
        elapsed = time.perf_counter() - started
    # Constant 5.68 W over the sampled span (which ends within one period of `elapsed`).
    assert meter.read() == pytest.approx(5.68064 * elapsed, rel=0.15)


def scrape(collector) -> dict:
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        s.name + str(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_worker_collector_on_a_jetson_tree():
    samples = scrape(WorkerCollector("jetson", "Orin Nano", "w1", sysfs_root=ORIN))
    assert (
        samples[
            "dnnprof_worker_info[('device', 'Orin Nano'), ('device_class', 'jetson'), ('hostname', 'w1')]"
        ]
        == 1
    )
    assert samples["dnnprof_worker_gpu_utilization_ratio[('gpu', '0'), ('name', 'tegra')]"] == pytest.approx(
        0.412
    )
    assert samples["dnnprof_worker_power_watts[('rail', 'VDD_IN')]"] == pytest.approx(5.68064)
    assert samples["dnnprof_worker_temperature_celsius[('sensor', 'gpu-thermal')]"] == 47.25
    assert samples["dnnprof_worker_memory_total_bytes[('gpu', '0'), ('name', 'tegra')]"] == 7824272 * 1024
    assert not any(k.startswith("dnnprof_worker_energy") for k in samples)  # no counter on Tegra


def test_worker_collector_on_a_cpu_host_reports_host_figures_only():
    samples = scrape(WorkerCollector("cpu", "AMD EPYC", "w2"))
    assert 0 <= samples["dnnprof_worker_cpu_utilization_ratio[]"] <= 1
    assert samples["dnnprof_worker_memory_total_bytes[('gpu', '-'), ('name', 'host')]"] > 0
    assert not any("gpu_utilization" in k or "power" in k for k in samples)
