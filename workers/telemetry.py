"""Device telemetry for the worker's own ``/metrics`` and for energy per image.

- NVIDIA data-centre/desktop GPUs: NVML (utilisation, memory, temperature, power, energy counter).
- Jetson (no NVML): sysfs — GPU load, thermal zones, the INA3221 power monitor (hwmon on
  JetPack 5/6, iio on JetPack 4), unified memory from /proc/meminfo — or a ``tegrastats`` line.
- CPU: host utilisation and memory (psutil).

A reading a platform does not offer is left out, never invented. Every sysfs reader takes a
``root`` so it can be pointed at recorded sample trees in tests.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

#: The rail that carries the whole module's input power, by JetPack generation.
INPUT_RAILS = ("VDD_IN", "POM_5V_IN")


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="ignore").strip().strip("\x00")
    except OSError:
        return None


class JetsonSysfs:
    #: The integrated GPU's load file (per mille), by generation: gpu.0 on JetPack 4 (Nano, TX1/2);
    #: named after the GPU on JetPack 5 (17000000.ga10b on Orin, 17000000.gv11b on Xavier); under
    #: bus@0 and named "gpu" on JetPack 6 (jetson-stats' jtop/core/gpu.py finds the same nodes).
    GPU_LOAD_GLOBS = (
        "sys/devices/gpu.0/load",
        "sys/devices/platform/gpu.0/load",
        "sys/devices/platform/*.ga10b/load",
        "sys/devices/platform/*.gv11b/load",
        "sys/devices/platform/*.gp10b/load",
        "sys/devices/platform/*.gpu/load",
        "sys/devices/platform/bus@0/*.gpu/load",
    )

    def __init__(self, root: Path = Path("/")) -> None:
        self.root = root

    def gpu_load_ratio(self) -> float | None:
        for pattern in self.GPU_LOAD_GLOBS:
            for path in sorted(self.root.glob(pattern)):
                value = _read(path)
                if value and value.isdigit():
                    return int(value) / 1000.0  # per mille
        return None

    def temperatures_c(self) -> dict[str, float]:
        out = {}
        for zone in sorted(self.root.glob("sys/class/thermal/thermal_zone*")):
            name, temp = _read(zone / "type"), _read(zone / "temp")
            if name and temp and temp.lstrip("-").isdigit():
                out[name] = int(temp) / 1000.0
        return out

    def power_rails_w(self) -> dict[str, float]:
        """Instantaneous power per INA3221 rail, in watts. Channels labelled ``NC`` (not connected,
        AGX Orin's second monitor) and channel 7 (the driver's "sum of shunt voltages") are no rails."""
        rails: dict[str, float] = {}
        # JetPack 5/6: hwmon, in<N>_label / in<N>_input (mV) / curr<N>_input (mA)
        for hwmon in sorted(self.root.glob("sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*")):
            for label_file in sorted(hwmon.glob("in*_label")):
                n = label_file.name[2:].split("_")[0]
                if n == "7" or _read(label_file) == "NC":
                    continue
                label, mv, ma = (
                    _read(label_file),
                    _read(hwmon / f"in{n}_input"),
                    _read(hwmon / f"curr{n}_input"),
                )
                if label and mv and ma and mv.isdigit() and ma.isdigit():
                    rails[label] = int(mv) * int(ma) / 1e6
        # JetPack 4: iio, rail_name_<N> / in_power<N>_input (mW)
        for device in sorted(self.root.glob("sys/bus/i2c/drivers/ina3221x/*/iio:device*")):
            for name_file in sorted(device.glob("rail_name_*")):
                n = name_file.name.rsplit("_", 1)[1]
                label, mw = _read(name_file), _read(device / f"in_power{n}_input")
                if label and mw and mw.isdigit():
                    rails[label] = int(mw) / 1000.0
        return rails

    def input_power_w(self) -> float | None:
        """The module's input rail where it has one; else (AGX Orin, whose monitors watch its
        sub-rails only) the sum of its rails, as jetson-stats totals them."""
        rails = self.power_rails_w()
        for name in INPUT_RAILS:
            if name in rails:
                return rails[name]
        return sum(rails.values()) if rails else None

    def memory_bytes(self) -> tuple[int, int] | None:
        """(total, used) of the unified memory."""
        text = _read(self.root / "proc/meminfo")
        if not text:
            return None
        fields = {
            line.split(":")[0]: int(line.split()[1]) * 1024 for line in text.splitlines() if ":" in line
        }
        if "MemTotal" not in fields or "MemAvailable" not in fields:
            return None
        return fields["MemTotal"], fields["MemTotal"] - fields["MemAvailable"]


_TEGRA_RAM = re.compile(r"RAM (\d+)/(\d+)MB")
_TEGRA_GPU = re.compile(r"GR3D_FREQ (\d+)%")
_TEGRA_TEMP = re.compile(r"(\w+)@(-?[\d.]+)C")
#: "VDD_IN 5682mW/5682mW" (JetPack 5/6) or "POM_5V_IN 4520/4680" (JetPack 4: no unit, mW).
_TEGRA_RAIL = re.compile(r"(\w+) (\d+)(?:mW)?/(\d+)(?:mW)?\b")


def parse_tegrastats(line: str) -> dict:
    """One ``tegrastats`` line -> ram (used, total bytes), gpu load ratio, temperatures, rails (W)."""
    out: dict = {"temperatures_c": {}, "rails_w": {}}
    if m := _TEGRA_RAM.search(line):
        out["ram_bytes"] = (int(m.group(1)) * 2**20, int(m.group(2)) * 2**20)
    if m := _TEGRA_GPU.search(line):
        out["gpu_load_ratio"] = int(m.group(1)) / 100.0
    for name, value in _TEGRA_TEMP.findall(line):
        out["temperatures_c"][name] = float(value)
    for name, current, _avg in _TEGRA_RAIL.findall(line):
        if name != "NC":  # an unconnected monitor channel
            out["rails_w"][name] = int(current) / 1000.0
    return out


class PowerIntegrator:
    """Integrates a power reading (W) over time in a background thread: cumulative joules, for
    devices with a power sensor but no energy counter (Jetson's INA3221). The clock is injected
    so the integration can be checked without depending on how fast a busy host runs the thread."""

    def __init__(
        self,
        read_watts: Callable[[], float | None],
        period_s: float = 0.05,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.read_watts = read_watts
        self.period_s = period_s
        self.clock = clock
        self.joules = 0.0
        self.first_t: float | None = None
        self.last_t: float | None = None
        self._last_w: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="power-integrator", daemon=True)

    def sample(self) -> None:
        """One reading, integrated with the previous one (trapezoid)."""
        t, w = self.clock(), self.read_watts()
        if self.last_t is not None and w is not None and self._last_w is not None:
            self.joules += (w + self._last_w) / 2 * (t - self.last_t)
        if self.first_t is None:
            self.first_t = t
        self.last_t, self._last_w = t, w

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.sample()

    def __enter__(self) -> PowerIntegrator:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()  # the span ends now, not at the thread's last period

    def read(self) -> float:
        return self.joules


def _nvml_metrics(hostname: str) -> Iterator[Metric]:
    import pynvml

    pynvml.nvmlInit()
    labels = ["gpu", "name"]
    util = GaugeMetricFamily("dnnprof_worker_gpu_utilization_ratio", "GPU busy time share", labels=labels)
    mem_used = GaugeMetricFamily("dnnprof_worker_memory_used_bytes", "Device memory in use", labels=labels)
    mem_total = GaugeMetricFamily("dnnprof_worker_memory_total_bytes", "Device memory", labels=labels)
    temp = GaugeMetricFamily("dnnprof_worker_temperature_celsius", "Temperature", labels=["sensor"])
    power = GaugeMetricFamily("dnnprof_worker_power_watts", "Power draw", labels=["rail"])
    energy = CounterMetricFamily(
        "dnnprof_worker_energy_joules", "Energy since the driver loaded", labels=labels
    )
    for i in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(i)
        name = pynvml.nvmlDeviceGetName(handle)
        name = name.decode() if isinstance(name, bytes) else name
        key = [str(i), name]
        with contextlib.suppress(pynvml.NVMLError):
            util.add_metric(key, pynvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0)
        with contextlib.suppress(pynvml.NVMLError):
            info = pynvml.nvmlDeviceGetMemoryInfo(handle)
            mem_used.add_metric(key, info.used)
            mem_total.add_metric(key, info.total)
        with contextlib.suppress(pynvml.NVMLError):
            temp.add_metric([f"gpu{i}"], pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU))
        with contextlib.suppress(pynvml.NVMLError):
            power.add_metric([f"gpu{i}"], pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0)
        with contextlib.suppress(pynvml.NVMLError):
            energy.add_metric(key, pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1000.0)
    yield from (util, mem_used, mem_total, temp, power, energy)


def _jetson_metrics(sysfs: JetsonSysfs) -> Iterator[Metric]:
    labels = ["gpu", "name"]
    key = ["0", "tegra"]
    if (load := sysfs.gpu_load_ratio()) is not None:
        util = GaugeMetricFamily("dnnprof_worker_gpu_utilization_ratio", "GPU busy time share", labels=labels)
        util.add_metric(key, load)
        yield util
    if (memory := sysfs.memory_bytes()) is not None:
        total, used = memory
        mem_used = GaugeMetricFamily(
            "dnnprof_worker_memory_used_bytes", "Unified memory in use", labels=labels
        )
        mem_used.add_metric(key, used)
        mem_total = GaugeMetricFamily("dnnprof_worker_memory_total_bytes", "Unified memory", labels=labels)
        mem_total.add_metric(key, total)
        yield mem_used
        yield mem_total
    temps = sysfs.temperatures_c()
    if temps:
        temp = GaugeMetricFamily("dnnprof_worker_temperature_celsius", "Temperature", labels=["sensor"])
        for sensor, value in temps.items():
            temp.add_metric([sensor], value)
        yield temp
    rails = sysfs.power_rails_w()
    if rails:
        power = GaugeMetricFamily("dnnprof_worker_power_watts", "Power draw", labels=["rail"])
        for rail, watts in rails.items():
            power.add_metric([rail], watts)
        yield power


def _cpu_metrics() -> Iterator[Metric]:
    import psutil

    cpu = GaugeMetricFamily("dnnprof_worker_cpu_utilization_ratio", "Host CPU busy share")
    cpu.add_metric([], psutil.cpu_percent(interval=None) / 100.0)
    vm = psutil.virtual_memory()
    labels = ["gpu", "name"]
    used = GaugeMetricFamily("dnnprof_worker_memory_used_bytes", "Host memory in use", labels=labels)
    used.add_metric(["-", "host"], vm.total - vm.available)
    total = GaugeMetricFamily("dnnprof_worker_memory_total_bytes", "Host memory", labels=labels)
    total.add_metric(["-", "host"], vm.total)
    yield from (cpu, used, total)


class WorkerCollector(Collector):
    def __init__(
        self, device_class: str, device_name: str, hostname: str, sysfs_root: Path = Path("/")
    ) -> None:
        self.device_class, self.device_name, self.hostname = device_class, device_name, hostname
        self.sysfs = JetsonSysfs(sysfs_root)

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "dnnprof_worker_info", "This worker", labels=["device_class", "device", "hostname"]
        )
        info.add_metric([self.device_class, self.device_name, self.hostname], 1)
        yield info
        if self.device_class == "cuda":
            try:
                yield from _nvml_metrics(self.hostname)
            except Exception:  # noqa: BLE001 - NVML gone (driver reset): report nothing rather than fail
                return
        elif self.device_class == "jetson":
            yield from _jetson_metrics(self.sysfs)
        else:
            yield from _cpu_metrics()
