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
ORIN = DATA / "jetson_orin_nano"  # JetPack 6 (L4T R36.4)
AGX_JP5 = DATA / "jetson_agx_orin_jp5"  # JetPack 5 (L4T R35.4.1)
NANO = DATA / "jetson_nano"  # JetPack 4 (L4T R32.7.1)


def test_jetson_is_recognised_with_its_release_and_power_mode():
    assert is_jetson(ORIN / "etc/nv_tegra_release", ORIN / "proc/device-tree/model")
    assert is_jetson(ORIN / "missing", ORIN / "proc/device-tree/model")  # model file alone
    assert not is_jetson(DATA / "missing", DATA / "missing")
    assert l4t_release(ORIN / "etc/nv_tegra_release") == "R36.4.0"
    assert l4t_release(NANO / "etc/nv_tegra_release") == "R32.7.1"
    assert jetson_power_mode((ORIN / "nvpmodel-q.txt").read_text()) == "15W"
    assert jetson_power_mode((NANO / "nvpmodel-q.txt").read_text()) == "MAXN"


def test_power_mode_in_a_container_without_nvpmodel_is_read_from_its_files(tmp_path):
    """No nvpmodel in the image: the mode id nvpmodel keeps and its name in the mounted table give
    what `nvpmodel -q` printed on the same board; without the files, no mode (not a guess)."""
    conf, status = ORIN / "etc/nvpmodel.conf", ORIN / "var/lib/nvpmodel/status"
    from_tool = jetson_power_mode((ORIN / "nvpmodel-q.txt").read_text())
    assert jetson_power_mode("", conf=conf, status=status) == from_tool == "15W"
    seven = tmp_path / "status"
    seven.write_text("pmode:0001 fmode:quiet\n")
    assert jetson_power_mode("", conf=conf, status=seven) == "7W"
    assert jetson_power_mode("", conf=conf, status=tmp_path / "missing") is None


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


def test_jetpack5_agx_orin_gpu_node_rails_without_an_input_rail_and_release():
    """JetPack 5 names the GPU node after the GPU (17000000.ga10b, not bus@0/17000000.gpu) and the
    AGX Orin's two monitors watch sub-rails only, with NC channels and the sum-of-shunts channel."""
    assert l4t_release(AGX_JP5 / "etc/nv_tegra_release") == "R35.4.1"
    assert is_jetson(AGX_JP5 / "missing", AGX_JP5 / "proc/device-tree/model")
    sysfs = JetsonSysfs(AGX_JP5)
    assert sysfs.gpu_load_ratio() == pytest.approx(0.312)
    rails = sysfs.power_rails_w()
    assert set(rails) == {"VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO"}  # no NC, no sum
    assert rails["VIN_SYS_5V0"] == pytest.approx(4.976 * 0.750)
    assert sysfs.input_power_w() == pytest.approx(sum(rails.values()))  # no input rail: the sum
    assert sysfs.temperatures_c()["gpu-thermal"] == 44.218


def test_tegrastats_lines_of_each_jetpack_generation():
    jp5 = parse_tegrastats((AGX_JP5 / "tegrastats.txt").read_text())
    assert jp5["gpu_load_ratio"] == pytest.approx(0.31)  # "GR3D_FREQ 31%@[305,305]"
    assert jp5["ram_bytes"] == (2448 * 2**20, 30589 * 2**20)
    assert jp5["rails_w"] == {
        "VDD_GPU_SOC": 2.797,
        "VDD_CPU_CV": 0.799,
        "VIN_SYS_5V0": 3.732,
        "VDDQ_VDD2_1V8AO": 0.497,
    }
    assert jp5["temperatures_c"]["GPU"] == 44.218 and jp5["temperatures_c"]["CV0"] == -256.0
    jp4 = parse_tegrastats((NANO / "tegrastats.txt").read_text())
    assert jp4["rails_w"] == {"POM_5V_IN": 4.52, "POM_5V_GPU": 0.0, "POM_5V_CPU": 1.078}  # no unit: mW
    assert jp4["ram_bytes"] == (1180 * 2**20, 3965 * 2**20) and jp4["gpu_load_ratio"] == 0.0


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


def test_power_integrator_integrates_readings_over_the_clock():
    """Driven by an injected clock: the trapezoid rule over known readings, whatever the host's load."""
    times, watts = iter([0.0, 0.1, 0.3, 0.6]), iter([5.0, 5.0, 7.0, None])
    meter = PowerIntegrator(lambda: next(watts), clock=lambda: next(times))
    for _ in range(4):
        meter.sample()
    assert meter.read() == pytest.approx(5.0 * 0.1 + (5.0 + 7.0) / 2 * 0.2)  # no reading: no area
    assert (meter.first_t, meter.last_t) == (0.0, 0.6)


def test_power_integrator_turns_the_input_rail_into_joules():
    sysfs = JetsonSysfs(ORIN)
    with PowerIntegrator(sysfs.input_power_w, period_s=0.01) as meter:
        time.sleep(0.05)
    # Constant 5.68 W over exactly the span it sampled, from entering to leaving.
    assert meter.last_t > meter.first_t
    assert meter.read() == pytest.approx(5.68064 * (meter.last_t - meter.first_t), rel=1e-9)


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
