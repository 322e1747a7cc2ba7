"""The CPU's architecture and model in the fingerprint and the target: arm64 cores named from
their implementer and part on real /proc/cpuinfo layouts (tests/data/cpuinfo/, each one's source in
tests/data/README.md), and an emulated CPU said and kept apart from a native one."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from dnnprof.contract import DeviceFingerprint
from dnnprof.targets import derive_target, target_of_fingerprint
from workers import cpuinfo
from workers.devices import cpu_model

LAYOUTS = Path(__file__).parent / "data" / "cpuinfo"


@pytest.mark.parametrize(
    ("layout", "model", "target"),
    [
        # Expected names: the kernel's arch/arm64/include/asm/cputype.h, ARM_CPU_IMP_ARM 0x41 with
        # ARM_CPU_PART_NEOVERSE_N1 0xD0C, ARM_CPU_PART_NEOVERSE_V1 0xD40, ARM_CPU_PART_CORTEX_A78AE
        # 0xD42, ARM_CPU_PART_CORTEX_A57 0xD07; ARM_CPU_IMP_NVIDIA 0x4E with NVIDIA_CPU_PART_CARMEL
        # 0x004 and NVIDIA_CPU_PART_DENVER 0x003.
        ("graviton2-neoverse-n1.txt", "Neoverse-N1", "cpu/neoverse-n1-aarch64-x3"),
        ("graviton3-neoverse-v1.txt", "Neoverse-V1", "cpu/neoverse-v1-aarch64-x3"),
        ("agx-orin-cortex-a78ae.txt", "Cortex-A78AE", "cpu/cortex-a78ae-aarch64-x3"),
        ("agx-xavier-carmel.txt", "Carmel", "cpu/carmel-aarch64-x3"),
        ("nano-cortex-a57.txt", "Cortex-A57", "cpu/cortex-a57-aarch64-x3"),
        ("tx2-cortex-a57-denver.txt", "Cortex-A57 + Denver", "cpu/cortex-a57-denver-aarch64-x3"),
    ],
)
def test_an_arm64_cpu_is_named_by_its_cores_and_its_target_says_arm64(layout, model, target):
    assert cpu_model(LAYOUTS / layout) == model
    assert cpuinfo.layout_arch((LAYOUTS / layout).read_text()) == "aarch64"
    assert cpuinfo.emulator_of("aarch64", (LAYOUTS / layout).read_text()) is None  # native
    assert derive_target("cpu", model, threads=3, arch="aarch64") == target


def test_a_core_the_table_lacks_is_named_by_its_vendor_and_part_never_as_the_generic_model_name():
    text = (LAYOUTS / "agx-orin-cortex-a78ae.txt").read_text().replace("0xd42", "0xd99")
    assert cpuinfo.model_from_cpuinfo(text) == "Arm part 0xd99"  # not "ARMv8 Processor rev 1 (v8l)"


def test_an_emulated_cpu_is_said_and_never_shares_a_target_with_the_native_one():
    host = (LAYOUTS / "x86-amd-epyc-this-host.txt").read_text()  # what qemu-user passes through
    assert cpuinfo.layout_arch(host) == "x86_64"
    assert cpuinfo.emulator_of("x86_64", host) is None
    assert cpuinfo.emulator_of("aarch64", host) == "qemu-user"
    model = cpuinfo.model_from_cpuinfo(host)
    assert model == "AMD EPYC"
    native = derive_target("cpu", model, threads=2, arch="x86_64")
    emulated = derive_target("cpu", model, threads=2, arch="aarch64", emulation="qemu-user")
    assert native == "cpu/amd-epyc-x2"
    assert emulated == "cpu/amd-epyc-aarch64-qemu-x2"


def test_the_fingerprint_carries_the_architecture_and_a_profile_stored_before_keeps_its_target():
    fields = {"device_class": "cpu", "device_name": "AMD EPYC", "torch_version": "2.5.1",
              "python_version": "3.11.2", "torch_threads": 2}
    old = msgspec.json.decode(msgspec.json.encode(fields), type=DeviceFingerprint)
    assert old.cpu_arch is None and target_of_fingerprint(old) == "cpu/amd-epyc-x2"
    emulated = DeviceFingerprint(**fields, cpu_arch="aarch64", cpu_emulation="qemu-user")
    again = msgspec.json.decode(msgspec.json.encode(emulated), type=DeviceFingerprint)
    assert (again.cpu_arch, again.cpu_emulation) == ("aarch64", "qemu-user")
    assert target_of_fingerprint(again) == "cpu/amd-epyc-aarch64-qemu-x2"


def test_this_process_reports_its_own_architecture_natively():
    assert cpuinfo.machine() in ("x86_64", "aarch64")
    assert cpuinfo.emulation() is None  # the test suite runs natively; under qemu see deploy/smoke-arm64.sh
