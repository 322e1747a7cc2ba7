"""Energy per image: NVML's energy counter on GPUs that have one, the Jetson's integrated input
rail; nothing elsewhere.

NVML's counter and the Jetson's rail update a few times a second, so a window of a few
milliseconds reads as zero or as one update's step. A figure is only given for a window of at
least :data:`MIN_WINDOW_S` (the timed runs are extended to last that long where a meter exists);
a shorter window gives no figure rather than a wrong one.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

MIN_WINDOW_S = 1.0


@dataclass
class EnergyMeter:
    """Reads joules consumed so far; ``None`` readings where no counter exists."""

    read: Callable[[], float | None]
    available: bool
    clock: Callable[[], float] = field(default=time.perf_counter)

    def window(self) -> EnergyWindow:
        return EnergyWindow(self)


class EnergyWindow:
    """Joules between ``start()`` and ``stop()``, or None for a window under a second."""

    def __init__(self, meter: EnergyMeter) -> None:
        self.meter = meter
        self._joules: float | None = None
        self._t0 = 0.0

    def start(self) -> None:
        self._joules = self.meter.read()
        self._t0 = self.meter.clock()

    def stop(self) -> tuple[float | None, float]:
        after = self.meter.read()
        seconds = self.meter.clock() - self._t0
        if self._joules is None or after is None or seconds < MIN_WINDOW_S or after <= self._joules:
            return None, seconds
        return after - self._joules, seconds


NO_METER = EnergyMeter(read=lambda: None, available=False)


@contextlib.contextmanager
def energy_meter(device_class: str, nvml_handle=None) -> Iterator[EnergyMeter]:
    """The meter for this device: the NVML handle of the measured GPU (matched by UUID by the
    memory probe), or the Jetson's rail."""
    if device_class == "jetson":
        from workers.telemetry import JetsonSysfs, PowerIntegrator

        sysfs = JetsonSysfs()
        if sysfs.input_power_w() is None:
            yield NO_METER
            return
        with PowerIntegrator(sysfs.input_power_w) as integrator:
            yield EnergyMeter(read=integrator.read, available=True)
        return
    if nvml_handle is None:
        yield NO_METER
        return
    import pynvml

    try:
        pynvml.nvmlDeviceGetTotalEnergyConsumption(nvml_handle)
    except Exception:  # noqa: BLE001 - no energy counter on this GPU (pre-Volta)
        yield NO_METER
        return

    def read() -> float | None:
        try:
            return pynvml.nvmlDeviceGetTotalEnergyConsumption(nvml_handle) / 1000.0
        except Exception:  # noqa: BLE001 - a counter that stops answering reads as absent
            return None

    yield EnergyMeter(read=read, available=True)
