"""What CPU this process runs on: its architecture, its model, and whether it is emulated.

On x86 ``/proc/cpuinfo`` names the model (``model name``). On arm64 it does not (an L4T kernel adds a
generic ``model name : ARMv8 Processor rev 1 (v8l)``): the core is named from its ``CPU implementer``
and ``CPU part`` fields, the MIDR_EL1 fields the kernel prints, looked up in the kernel's table
(``arch/arm64/include/asm/cputype.h``, ``ARM_CPU_IMP_*`` and ``*_CPU_PART_*``).

Under qemu-user (an arm64 image run on an x86 host) ``platform.machine()`` is the guest's
(``aarch64``) while ``/proc/cpuinfo`` is the host's, x86 layout and all; qemu also runs a thread of
its own in every process (:func:`emulator_threads`, so that the measuring template still forks).
Such a CPU is said to be emulated: its figures are the emulator's, tens of times slower than either
CPU, and its profiles get a target of their own (:mod:`dnnprof.targets`). Torch-free: the worker's
main process and ``dnnprof doctor`` use it.
"""

from __future__ import annotations

import contextlib
import os
import platform
from collections import Counter
from pathlib import Path

#: Implementers (MIDR_EL1 bits 31:24), from the kernel's arch/arm64/include/asm/cputype.h ARM_CPU_IMP_*.
ARM_IMPLEMENTERS = {
    0x41: "Arm",
    0x42: "Broadcom",
    0x43: "Cavium",
    0x46: "Fujitsu",
    0x48: "HiSilicon",
    0x4E: "NVIDIA",
    0x50: "APM",
    0x51: "Qualcomm",
    0x61: "Apple",
    0xC0: "Ampere",
}

#: (implementer, part) -> core, from the same file's *_CPU_PART_* (names as Arm markets them).
ARM_PARTS = {
    (0x41, 0xD03): "Cortex-A53",
    (0x41, 0xD04): "Cortex-A35",
    (0x41, 0xD05): "Cortex-A55",
    (0x41, 0xD07): "Cortex-A57",  # Jetson Nano, TX1
    (0x41, 0xD08): "Cortex-A72",  # Raspberry Pi 4, Graviton (1)
    (0x41, 0xD09): "Cortex-A73",
    (0x41, 0xD0A): "Cortex-A75",
    (0x41, 0xD0B): "Cortex-A76",  # Raspberry Pi 5
    (0x41, 0xD0C): "Neoverse-N1",  # Graviton2, Ampere Altra
    (0x41, 0xD0D): "Cortex-A77",
    (0x41, 0xD0E): "Cortex-A76AE",
    (0x41, 0xD40): "Neoverse-V1",  # Graviton3
    (0x41, 0xD41): "Cortex-A78",
    (0x41, 0xD42): "Cortex-A78AE",  # Jetson Orin
    (0x41, 0xD44): "Cortex-X1",
    (0x41, 0xD46): "Cortex-A510",
    (0x41, 0xD47): "Cortex-A710",
    (0x41, 0xD49): "Neoverse-N2",
    (0x41, 0xD4B): "Cortex-A78C",
    (0x41, 0xD4F): "Neoverse-V2",  # Grace, Graviton4
    (0x41, 0xD80): "Cortex-A520",
    (0x41, 0xD81): "Cortex-A720",
    (0x41, 0xD84): "Neoverse-V3",
    (0x41, 0xD8E): "Neoverse-N3",
    (0x43, 0x0AF): "ThunderX2",
    (0x46, 0x001): "A64FX",
    (0x48, 0xD01): "TSV110",
    (0x4E, 0x003): "Denver",  # Jetson TX2
    (0x4E, 0x004): "Carmel",  # Jetson Xavier
    (0x4E, 0x010): "Olympus",  # Vera
    (0x50, 0x000): "X-Gene",
    (0xC0, 0xAC3): "AmpereOne",
    (0xC0, 0xAC4): "AmpereOne-A",
}

#: platform.machine() spellings of one architecture (macOS and some BSDs say arm64).
_ARCH_ALIASES = {"arm64": "aarch64", "amd64": "x86_64", "x64": "x86_64"}
X86 = ("x86_64", "i386", "i486", "i586", "i686")

CPUINFO = Path("/proc/cpuinfo")


def machine() -> str:
    """This process's architecture as the kernel (or qemu-user) reports it: 'x86_64', 'aarch64'."""
    raw = platform.machine().lower() or "unknown"
    return _ARCH_ALIASES.get(raw, raw)


def cpuinfo_blocks(text: str) -> list[dict[str, str]]:
    """``/proc/cpuinfo`` as one dict per blank-line separated block (a processor, or a trailer
    such as arm32's ``Hardware``), keys lower-cased."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
            current = {}
            continue
        if ":" in line:
            key, value = line.split(":", 1)
            current[key.strip().lower()] = value.strip()
    if current:
        blocks.append(current)
    return blocks


def layout_arch(text: str) -> str | None:
    """Which architecture's kernel wrote this ``/proc/cpuinfo``: x86 prints ``vendor_id`` and
    ``flags`` per processor, arm64 ``CPU implementer`` and ``Features``; None if neither."""
    keys = {key for block in cpuinfo_blocks(text) for key in block}
    if "vendor_id" in keys and "flags" in keys:
        return "x86_64"
    if "cpu implementer" in keys:
        return "aarch64"
    return None


def _hex(value: str | None) -> int | None:
    try:
        return int(value, 16) if value else None
    except ValueError:
        return None


def arm_core_name(implementer: int, part: int) -> str:
    """'Neoverse-N1', or for a core the table lacks its vendor and part: 'Arm part 0xd87'."""
    if name := ARM_PARTS.get((implementer, part)):
        return name
    vendor = ARM_IMPLEMENTERS.get(implementer, f"implementer {implementer:#04x}")
    return f"{vendor} part {part:#05x}"


def arm_cores(text: str) -> list[str]:
    """The arm64 cores of a cpuinfo text, most numerous first ('Cortex-A57', 'Denver' on a TX2)."""
    counts: Counter[str] = Counter()
    for block in cpuinfo_blocks(text):
        implementer, part = _hex(block.get("cpu implementer")), _hex(block.get("cpu part"))
        if implementer is not None and part is not None:
            counts[arm_core_name(implementer, part)] += 1
    return [name for name, _ in counts.most_common()]


def model_from_cpuinfo(text: str) -> str | None:
    """The CPU's model from a cpuinfo text: arm64 cores by implementer and part (two kinds on a
    big.LITTLE SoC: 'Cortex-A57 + Denver'), else x86's ``model name`` (or arm32's ``Hardware``)."""
    if cores := arm_cores(text):
        return " + ".join(cores)
    for block in cpuinfo_blocks(text):
        for key in ("model name", "hardware", "cpu model"):
            if block.get(key):
                return block[key]
    return None


def cpu_model(cpuinfo: Path = CPUINFO) -> str | None:
    with contextlib.suppress(OSError):
        if model := model_from_cpuinfo(cpuinfo.read_text(errors="ignore")):
            return model
    return platform.processor() or None


def emulator_of(arch: str, cpuinfo_text: str | None) -> str | None:
    """'qemu-user' where this process runs emulated, else None. qemu-user answers uname with the
    guest's architecture but passes ``/proc/cpuinfo`` through from the host (qemu 7.2, Debian
    bookworm's): a layout of another architecture than the one this process runs is the host's."""
    if not cpuinfo_text:
        return None
    written_by = layout_arch(cpuinfo_text)
    if written_by is not None and written_by != arch and not (arch in X86 and written_by in X86):
        return "qemu-user"
    return None


TASKS = Path("/proc/self/task")

#: The host signals QEMU's qemu_thread_create leaves unblocked in the threads it starts (its RCU
#: thread in qemu-user; util/qemu-thread-posix.c): SIGILL, SIGFPE, SIGSEGV. With SIGKILL, SIGSTOP
#: and glibc's two internal signals (32, 33), which cannot be blocked, they are the only zero bits
#: of such a thread's ``SigBlk`` (fffffffe7ffbfa77 under qemu 7.2).
_QEMU_UNBLOCKED = {4, 8, 9, 11, 19, 32, 33}


def emulator_binary(tasks: Path = TASKS) -> str | None:
    """The emulator running this process ('qemu-aarch64-static'), else None. qemu-user answers
    ``/proc/self/exe`` with the guest's program but not a thread's ``/proc/self/task/<tid>/exe``,
    which the kernel reports: the emulator's own binary."""
    with contextlib.suppress(OSError, StopIteration):
        name = Path(os.readlink(next(tasks.iterdir()) / "exe")).name
        return name if name.startswith("qemu-") else None
    return None


def _blocks_all_but_qemus(status: str) -> bool:
    for line in status.splitlines():
        if line.startswith("SigBlk:"):
            mask = int(line.split(":", 1)[1], 16)
            return {n for n in range(1, 65) if not mask >> (n - 1) & 1} == _QEMU_UNBLOCKED
    return False


def emulator_threads(tasks: Path = TASKS) -> set[str]:
    """The thread ids of this process that are the emulator's, not the program's: under qemu-user
    its threads that block every host signal QEMU blocks (a guest's threads block none on the host:
    qemu keeps guest signal masks itself); natively none, whatever a thread blocks."""
    if emulation(tasks=tasks) is None:
        return set()
    found = set()
    for task in tasks.iterdir():
        with contextlib.suppress(OSError):
            if _blocks_all_but_qemus((task / "status").read_text()):
                found.add(task.name)
    return found


def program_threads(tasks: Path = TASKS) -> list[str]:
    """This process's threads less the emulator's, by thread id."""
    try:
        every = sorted(entry.name for entry in tasks.iterdir())
    except OSError:
        return ["self"]  # no /proc: one thread, as far as anyone can tell
    emulator = emulator_threads(tasks)
    return [tid for tid in every if tid not in emulator]


def emulation(cpuinfo: Path = CPUINFO, tasks: Path = TASKS) -> str | None:
    """'qemu-user' where this process runs emulated: its threads' binary is qemu's, or (a qemu
    whose binary is hidden) its ``/proc/cpuinfo`` is another architecture's (:func:`emulator_of`)."""
    if emulator_binary(tasks):
        return "qemu-user"
    with contextlib.suppress(OSError):
        return emulator_of(machine(), cpuinfo.read_text(errors="ignore"))
    return None


def is_x86(arch: str | None) -> bool:
    return arch is None or arch in X86

