"""NVML for the GPU that torch measures on, matched by UUID.

NVML enumerates every GPU of the host in PCI bus order; CUDA (and so torch) only the visible ones,
renumbered from 0 and, unless ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, fastest first. Under
``CUDA_VISIBLE_DEVICES=3`` torch's device 0 is NVML's device 3. The one key both agree on is the
UUID: before CUDA exists the visible list names it (or its PCI index), after it torch reports it.
No torch here: the worker's parent process uses this before any CUDA context may exist.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any


def load() -> Any | None:
    """The initialised ``pynvml`` module, or None where there is no NVML (no driver, a Jetson)."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no library, no driver: callers go without NVML figures
        return None
    return pynvml


def normalise_uuid(uuid: str | bytes) -> str:
    """'GPU-1a2b…' (NVML), '1a2b…' (torch) -> '1a2b…' in lower case."""
    text = uuid.decode() if isinstance(uuid, bytes) else str(uuid)
    text = text.strip().lower()
    return text[4:] if text.startswith("gpu-") else text


def uuid_of(nvml: Any, handle: Any) -> str:
    return normalise_uuid(nvml.nvmlDeviceGetUUID(handle))


def handle_by_uuid(nvml: Any, uuid: str) -> Any | None:
    """The NVML handle of the GPU whose UUID is ``uuid`` (either spelling), or None."""
    wanted = normalise_uuid(uuid)
    for index in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        with contextlib.suppress(Exception):
            if uuid_of(nvml, handle) == wanted:
                return handle
    return None


def visible_handle(nvml: Any, cuda_index: int = 0, env: dict[str, str] | None = None) -> Any | None:
    """Before CUDA starts: the NVML handle of what CUDA will call device ``cuda_index``, from
    ``CUDA_VISIBLE_DEVICES`` (a UUID, or a PCI-ordered index as the measuring process sets
    ``CUDA_DEVICE_ORDER=PCI_BUS_ID``); without that variable, NVML's own index."""
    env = os.environ if env is None else env
    visible = env.get("CUDA_VISIBLE_DEVICES")
    try:
        if visible is None:
            return nvml.nvmlDeviceGetHandleByIndex(cuda_index)
        entries = [v.strip() for v in visible.split(",") if v.strip()]
        if cuda_index >= len(entries):
            return None
        entry = entries[cuda_index]
        if entry.isdigit():
            return nvml.nvmlDeviceGetHandleByIndex(int(entry))
        return handle_by_uuid(nvml, entry)
    except Exception:  # noqa: BLE001 - an entry NVML does not know (MIG, a typo): no handle
        return None


def used_bytes_by_uuid(nvml: Any) -> dict[str, int]:
    """Every GPU's used memory now, by UUID: the baseline taken before this process's CUDA context,
    picked out afterwards by the UUID torch reports."""
    out: dict[str, int] = {}
    for index in range(nvml.nvmlDeviceGetCount()):
        with contextlib.suppress(Exception):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            out[uuid_of(nvml, handle)] = int(nvml.nvmlDeviceGetMemoryInfo(handle).used)
    return out


#: nvmlClocksThrottleReasons bits (nvml.h), in words.
THROTTLE_REASONS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}


def throttle_reasons(mask: int) -> list[str]:
    return [name for bit, name in THROTTLE_REASONS.items() if mask & bit]
