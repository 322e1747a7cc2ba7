"""Which device class and device target this machine serves, found without initialising CUDA
(safe before fork)."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import subprocess
from pathlib import Path

from dnnprof.contract import TARGET_PATTERN
from dnnprof.targets import derive_target
from workers import cpuinfo as cpuinfo_module

#: Where the device files are read from: the machine's own, or a recorded tree (dnnprof doctor --root).
ROOT = Path("/")
TEGRA_RELEASE = Path("/etc/nv_tegra_release")
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")


def under(root: Path, path: Path) -> Path:
    """``path`` (absolute) read under ``root``: /etc/x under tests/data/jetson_nano."""
    return root / path.relative_to("/")


def is_jetson(release_file: Path = TEGRA_RELEASE, model_file: Path = DEVICE_TREE_MODEL) -> bool:
    if release_file.exists():
        return True
    with contextlib.suppress(OSError):
        return "jetson" in model_file.read_text(errors="ignore").lower()
    return False


def nvml_gpu_names() -> list[str]:
    """Names of the GPUs NVML sees (empty without a driver); NVML does not create a CUDA context."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return []
    try:
        names = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i))
            names.append(name.decode() if isinstance(name, bytes) else name)
        return names
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()


def detect_device_class(root: Path = ROOT) -> str:
    if is_jetson(under(root, TEGRA_RELEASE), under(root, DEVICE_TREE_MODEL)):
        return "jetson"
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) not in ("", "-1") and nvml_gpu_names():
        return "cuda"
    return "cpu"


def device_name(device_class: str, root: Path = ROOT) -> str:
    if device_class == "cuda":
        from workers import nvml

        module = nvml.load()  # the GPU torch will use (CUDA_VISIBLE_DEVICES), not NVML's index 0
        handle = nvml.visible_handle(module, 0) if module is not None else None
        if handle is not None:
            with contextlib.suppress(Exception):
                name = module.nvmlDeviceGetName(handle)
                return name.decode() if isinstance(name, bytes) else name
    if device_class == "jetson":
        with contextlib.suppress(OSError):
            return under(root, DEVICE_TREE_MODEL).read_text(errors="ignore").strip("\x00 \n")
    return cpu_model(under(root, cpuinfo_module.CPUINFO)) or platform.machine()


def cpu_model(cpuinfo: Path = cpuinfo_module.CPUINFO) -> str | None:
    """The CPU's model: x86's ``model name``, arm64's cores by implementer and part (see
    :mod:`workers.cpuinfo`)."""
    return cpuinfo_module.cpu_model(cpuinfo)


def device_memory_bytes(device_class: str, root: Path = ROOT) -> int | None:
    """The first visible GPU's memory (NVML, no CUDA context), or the host's for CPU and Jetson
    (``MemTotal``: what sysconf's physical pages count, readable in a recorded tree too)."""
    if device_class == "cuda":
        from workers import nvml

        module = nvml.load()
        handle = nvml.visible_handle(module, 0) if module is not None else None
        if handle is not None:
            with contextlib.suppress(Exception):
                return int(module.nvmlDeviceGetMemoryInfo(handle).total)
        return None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in (root / "proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    with contextlib.suppress(OSError, ValueError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return None


NVPMODEL_CONF = Path("/etc/nvpmodel.conf")
NVPMODEL_STATUS = Path("/var/lib/nvpmodel/status")


def jetson_power_mode(
    nvpmodel_output: str | None = None,
    conf: Path = NVPMODEL_CONF,
    status: Path = NVPMODEL_STATUS,
    root: Path = ROOT,
) -> str | None:
    """The board's power mode name ('MAXN', '15W'): from ``nvpmodel -q`` where the tool exists,
    else from the files nvpmodel keeps (a container has no nvpmodel; compose.jetson.yml mounts
    them); None where neither is there: the result then says no power mode. Under another ``root``
    (a recorded tree) only its files are read."""
    if root != ROOT:
        return power_mode_from_files(under(root, conf), under(root, status))
    if nvpmodel_output is None:
        try:
            nvpmodel_output = subprocess.run(
                ["nvpmodel", "-q"], capture_output=True, text=True, timeout=5, check=False
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return power_mode_from_files(conf, status)
    for line in nvpmodel_output.splitlines():
        if "power mode" in line.lower() and ":" in line:
            return line.split(":", 1)[1].strip()
    return power_mode_from_files(conf, status)


def power_mode_from_files(conf: Path, status: Path) -> str | None:
    """``/var/lib/nvpmodel/status`` holds the mode's id (``pmode:0002 fmode:...``), the table in
    ``/etc/nvpmodel.conf`` its name (``< POWER_MODEL ID=2 NAME=15W >``)."""
    try:
        current = re.search(r"pmode:\s*(\d+)", status.read_text(errors="ignore"))
        table = conf.read_text(errors="ignore")
    except OSError:
        return None
    if current is None:
        return None
    for mode_id, name in re.findall(r"<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=([^\s>]+)", table):
        if int(mode_id) == int(current.group(1)):
            return name
    return None


def l4t_release(release_file: Path = TEGRA_RELEASE) -> str | None:
    """'# R36 (release), REVISION: 3.0, ...' -> 'R36.3.0'."""
    with contextlib.suppress(OSError, IndexError):
        first = release_file.read_text(errors="ignore").splitlines()[0]
        major = first.split("(")[0].replace("#", "").strip()
        revision = first.split("REVISION:")[1].split(",")[0].strip()
        return f"{major}.{revision}"
    return None


def cpu_arch_and_emulation(root: Path = ROOT) -> tuple[str, str | None]:
    """This process's CPU architecture and emulator; for a recorded tree, the architecture its
    ``/proc/cpuinfo`` was written by (no process of its runs here to be emulated)."""
    if root == ROOT:
        return cpuinfo_module.machine(), cpuinfo_module.emulation()
    with contextlib.suppress(OSError):
        layout = cpuinfo_module.layout_arch(under(root, cpuinfo_module.CPUINFO).read_text(errors="ignore"))
        if layout:
            return layout, None
    return cpuinfo_module.machine(), None


def worker_target(
    device_class: str, override: str | None = None, root: Path = ROOT, cpu_threads: int | None = None
) -> str:
    """This worker's device target: ``override`` (``DNNPROF_DEVICE_TARGET``, with or without its
    class prefix) where set, else derived from the device (see :mod:`dnnprof.targets`). Raises
    ValueError for an override that is not a valid target of this class."""
    if override:
        target = override if "/" in override else f"{device_class}/{override}"
        if not re.match(TARGET_PATTERN, target) or not target.startswith(device_class + "/"):
            raise ValueError(
                f"DNNPROF_DEVICE_TARGET={override!r} is not a {device_class} target: lower-case letters, "
                f"digits, '.', '-', '_' after '{device_class}/' (e.g. {device_class}/my-host), at most 80"
            )
        return target
    threads = None
    if device_class == "cpu":
        from workers.engine.host import choose_threads

        threads = choose_threads(cpu_threads)[0]
    arch, emulation = cpu_arch_and_emulation(root)
    return derive_target(
        device_class,
        device_name(device_class, root),
        memory_bytes=device_memory_bytes(device_class, root),
        power_mode=jetson_power_mode(root=root) if device_class == "jetson" else None,
        threads=threads,
        arch=arch,
        emulation=emulation,
    )


BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
JETSON_SERIAL = Path("/proc/device-tree/serial-number")


def boot_id(path: Path = BOOT_ID) -> str:
    """The kernel's id of this boot: the same in every container of a host, unlike its hostname."""
    with contextlib.suppress(OSError):
        return path.read_text().strip()
    return platform.node()  # no procfs: the best this process can say


def cpu_set() -> str:
    """The CPUs this process may run on, as ranges ('0-3,8')."""
    if hasattr(os, "sched_getaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
    else:
        cpus = list(range(os.cpu_count() or 1))
    ranges: list[list[int]] = []
    for cpu in cpus:
        if ranges and cpu == ranges[-1][1] + 1:
            ranges[-1][1] = cpu
        else:
            ranges.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


def device_lease_name(device_class: str) -> str:
    """The physical device one measurement at a time may use, named so that every worker on it
    (a container, another hostname) names it alike: a GPU's NVML UUID (the same in every
    container), a Jetson's module serial (else its boot id), a CPU's boot id and CPU set. Two
    workers given overlapping but different CPU sets are not kept apart."""
    if device_class == "cuda":
        from workers import nvml

        module = nvml.load()
        handle = nvml.visible_handle(module, 0) if module is not None else None
        if handle is not None:
            with contextlib.suppress(Exception):
                uuid = module.nvmlDeviceGetUUID(handle)
                return uuid.decode() if isinstance(uuid, bytes) else uuid
        return f"{boot_id()}:cuda:{os.environ.get('CUDA_VISIBLE_DEVICES', '')}"
    if device_class == "jetson":
        with contextlib.suppress(OSError):
            serial = JETSON_SERIAL.read_text(errors="ignore").strip("\x00 \n")
            if serial:
                return f"jetson:{serial}"
        return f"{boot_id()}:jetson"
    return f"{boot_id()}:cpu:{cpu_set()}"
