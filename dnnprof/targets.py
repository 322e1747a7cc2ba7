"""Device targets: which device a profile ran on, as a stable, readable key.

A class (``cpu``, ``cuda``, ``jetson``) says what kind of device; a target says which one:
``cuda/nvidia-h100-80gb-hbm3``, ``jetson/nvidia-jetson-orin-nano-8gb-15w``,
``cpu/amd-epyc-7b13-x2``, ``cpu/neoverse-n1-aarch64-x3``, ``cpu/amd-epyc-aarch64-qemu-x2``. A worker
derives its target from what it measures on (class, device model and memory; on a Jetson the module
and its power mode; on a CPU the CPU model, its architecture where not x86-64, the emulator where one
runs it, and the threads a measurement uses) unless ``DNNPROF_DEVICE_TARGET`` names it. Requests,
queues, dedupe and every analysis key on it; profiles stored before targets existed get theirs from
their fingerprint.
"""

from __future__ import annotations

import re

from dnnprof.contract import DEVICE_CLASSES, DeviceFingerprint, ProfileRecord


def slug(text: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3' (registered marks and vendor noise out)."""
    text = re.sub(r"\((r|tm)\)|®|™|\bcpu\b|@.*$", " ", text.lower())
    return re.sub(r"[^a-z0-9.]+", "-", text).strip("-.")[:60] or "unknown"


#: platform.machine() of the CPUs whose targets name no architecture (they came first).
X86_ARCHS = ("x86_64", "amd64", "i386", "i686")

#: Sizes devices are sold by (GB): what a driver reports (an L4's 22.5 GiB, an Orin Nano's 7.6 GB
#: left to Linux) is named by the nearest one within 10%.
MARKETED_GB = (1, 2, 4, 6, 8, 10, 11, 12, 16, 20, 24, 32, 40, 48, 64, 80, 94, 96, 128, 141, 180, 192)


def memory_label(memory_bytes: int | None) -> str | None:
    if not memory_bytes:
        return None
    gb = memory_bytes / 1e9
    nearest = min(MARKETED_GB, key=lambda m: abs(m - gb))
    return f"{nearest if abs(nearest - gb) <= 0.1 * nearest else round(gb)}gb"


def derive_target(
    device_class: str,
    device_name: str | None,
    *,
    memory_bytes: int | None = None,
    power_mode: str | None = None,
    threads: int | None = None,
    arch: str | None = None,
    emulation: str | None = None,
) -> str:
    """The target a worker advertises (see the module docstring); pure, so the API, the worker and
    the migration of stored profiles agree. A CPU of another architecture than x86-64 says its
    architecture, and an emulated one its emulator, so neither shares a target with a native x86
    CPU (whose targets, and those stored before architectures were recorded, stay as they were)."""
    name = slug(device_name or "unknown")
    if device_class == "jetson":  # the class says Jetson; the board's kit names are noise
        name = re.sub(r"(^|-)(nvidia|jetson|developer-kit|engineering-reference)(?=-|$)", "", name).strip("-")
    parts = [name or "unknown"]
    if device_class in ("cuda", "jetson"):
        memory = memory_label(memory_bytes)
        if memory and memory not in parts[0]:  # "H100 80GB HBM3" names it already; "L4" does not
            parts.append(memory)
    if device_class == "jetson" and power_mode:
        parts.append(slug(power_mode))
    if device_class == "cpu" and arch and arch not in X86_ARCHS:
        parts.append(slug(arch))
    if emulation:
        parts.append(slug(emulation.split("-")[0]))  # 'qemu-user' -> 'qemu'
    if device_class == "cpu" and threads:
        parts.append(f"x{threads}")
    return f"{device_class}/" + "-".join(parts)[:80]


def class_of(device: str) -> str:
    """'cuda/nvidia-l4-22gb' -> 'cuda'; a class is its own class."""
    return device.partition("/")[0]


def is_target(device: str) -> bool:
    return "/" in device and class_of(device) in DEVICE_CLASSES


def matches(device: str | None, target: str) -> bool:
    """Whether a filter (a class, a target, or None for all) selects a target."""
    return device is None or device == target or ("/" not in device and class_of(target) == device)


def target_of_fingerprint(fp: DeviceFingerprint) -> str:
    """A stored profile's target from its fingerprint (profiles stored before targets existed)."""
    if fp.device_target:
        return fp.device_target
    return derive_target(
        fp.device_class,
        fp.device_name,
        memory_bytes=fp.device_memory_bytes,
        power_mode=fp.jetson_power_mode,
        threads=fp.torch_threads,
        arch=fp.cpu_arch,
        emulation=fp.cpu_emulation,
    )


def target_of(record: ProfileRecord) -> str:
    """Where a profile ran (its result's fingerprint), else where it was sent, else its class."""
    if record.result is not None:
        return target_of_fingerprint(record.result.fingerprint)
    return record.settings.target or record.settings.device
