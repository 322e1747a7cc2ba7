"""Device targets: derived from the device, overridable, stable in keys; profiles stored before
targets get theirs from their fingerprint; analyses never mix two targets of one class."""

from __future__ import annotations

import os

import msgspec
import pytest

from dnnprof import analysis
from dnnprof.contract import DeviceFingerprint, ProfileRecord, ProfileSettings
from dnnprof.queue import queue_for, route_of
from dnnprof.targets import derive_target, matches, target_of
from tests.factories import profile
from workers.devices import worker_target

GIB = 1024**3


@pytest.mark.parametrize(
    ("device_class", "name", "memory", "power", "threads", "expected"),
    [
        ("cuda", "NVIDIA H100 80GB HBM3", 85_520_809_984, None, None, "cuda/nvidia-h100-80gb-hbm3"),
        ("cuda", "NVIDIA L4", 23_034 * 1024**2, None, None, "cuda/nvidia-l4-24gb"),
        ("cuda", "NVIDIA H200", 150_754_820_096, None, None, "cuda/nvidia-h200-141gb"),
        (
            "jetson",
            "NVIDIA Jetson Orin Nano Developer Kit",
            7_620_000_000,
            "15W",
            None,
            "jetson/orin-nano-8gb-15w",
        ),
        (
            "jetson",
            "NVIDIA Jetson AGX Orin Developer Kit",
            64_300_000_000,
            "MAXN",
            None,
            "jetson/agx-orin-64gb-maxn",
        ),
        ("cpu", "AMD EPYC 7B13", 64 * GIB, None, 2, "cpu/amd-epyc-7b13-x2"),
        ("cpu", "Intel(R) Xeon(R) CPU @ 2.20GHz", 24 * GIB, None, 2, "cpu/intel-xeon-x2"),
    ],
)
def test_a_target_is_a_readable_key_of_the_device(device_class, name, memory, power, threads, expected):
    target = derive_target(device_class, name, memory_bytes=memory, power_mode=power, threads=threads)
    assert target == expected


def test_two_power_modes_or_thread_counts_are_two_targets():
    orin = {"memory_bytes": 7_620_000_000}
    assert derive_target("jetson", "Orin Nano", power_mode="15W", **orin) != derive_target(
        "jetson", "Orin Nano", power_mode="7W", **orin
    )
    assert derive_target("cpu", "AMD EPYC 7B13", threads=2) != derive_target(
        "cpu", "AMD EPYC 7B13", threads=8
    )


def test_the_override_names_a_target_of_the_workers_class_or_is_refused():
    assert worker_target("cpu", "lab-box") == "cpu/lab-box"
    assert worker_target("cpu", "cpu/lab-box") == "cpu/lab-box"
    for bad in ("cuda/lab-box", "Lab Box", "cpu/", "cpu/" + "x" * 81):
        with pytest.raises(ValueError, match="DNNPROF_DEVICE_TARGET"):
            worker_target("cpu", bad)
    derived = worker_target("cpu")
    # Without an override: the CPU's model name, then the threads the measuring process uses
    # (every usable core on a host of up to 3, all but one from 4: workers/engine/host.py).
    cores = len(os.sched_getaffinity(0))
    assert derived.startswith("cpu/") and derived.endswith(f"-x{cores if cores < 4 else cores - 1}"), derived


def test_queues_are_per_class_and_per_target():
    assert queue_for("cpu") == "dnnprof.cpu"
    assert queue_for("cuda/nvidia-l4-24gb") == "dnnprof.cuda.nvidia-l4-24gb"
    settings = settings_for("cuda", target="cuda/nvidia-l4-24gb")
    assert route_of(settings) == "dnnprof.cuda.nvidia-l4-24gb"
    assert route_of(settings_for("cuda")) == "dnnprof.cuda"


def settings_for(device: str, target: str | None = None, model: str = "tv:resnet50") -> ProfileSettings:
    return ProfileSettings(
        model=model,
        device=device,
        batch_sizes=(1, 8, 64),
        runs=10,
        precision="fp32",
        input_size=224,
        repeats=3,
        reparameterize=False,
        target=target,
    )


def test_dedupe_keys_stored_before_targets_stay_what_they_were_and_targets_key_apart():
    # Computed with the contract of commit ea9e037, before targets existed.
    assert settings_for("cuda").dedupe_key() == "6ba19f0df2c69c70b77e612db1b1d8b2"
    keys = {
        settings_for("cuda", t).dedupe_key()
        for t in (None, "cuda/nvidia-l4-24gb", "cuda/nvidia-h100-80gb-hbm3")
    }
    assert len(keys) == 3


def record(model: str, device: str, fingerprint: DeviceFingerprint, ms: dict[int, float], created: float):
    size_mb = 100.0 if model == "tv:resnet50" else 46.8
    return profile(
        model,
        device=device,
        params=int(size_mb * 1e6 / 4),
        cells={bs: (t, 500 + 3 * size_mb + bs) for bs, t in ms.items()},
        file_mb=size_mb,
        published_top1=76.1,
        created=created,
        fingerprint=fingerprint,
    )


L4 = DeviceFingerprint(
    device_class="cuda",
    device_name="NVIDIA L4",
    device_memory_bytes=23_034 * 1024**2,
    torch_version="2.4",
    python_version="3.11",
)
H100 = DeviceFingerprint(
    device_class="cuda",
    device_name="NVIDIA H100 80GB HBM3",
    device_memory_bytes=85_520_809_984,
    torch_version="2.4",
    python_version="3.11",
)


def test_a_profile_stored_before_targets_gets_its_target_from_its_fingerprint():
    stored = record("tv:resnet50", "cuda", L4, {1: 4.0}, 1.0)
    raw = msgspec.json.encode(stored)
    assert b"device_target" in raw  # None today: the fingerprint carries the key once it is known
    old = msgspec.json.decode(raw.replace(b',"device_target":null', b""), type=ProfileRecord)
    assert target_of(old) == "cuda/nvidia-l4-24gb"
    assert matches("cuda", target_of(old)) and matches("cuda/nvidia-l4-24gb", target_of(old))
    assert not matches("cuda/nvidia-h100-80gb-hbm3", target_of(old)) and not matches("cpu", target_of(old))
    advertised = msgspec.structs.replace(L4, device_target="cuda/lab-l4")
    assert target_of(record("tv:resnet50", "cuda", advertised, {1: 4.0}, 1.0)) == "cuda/lab-l4"


def test_two_targets_of_one_class_are_two_rows_two_frontiers_two_fits_and_compare_per_batch_size():
    records = [
        record("tv:resnet50", "cuda", L4, {1: 4.0, 8: 2.0}, 1.0),
        record("tv:resnet50", "cuda", H100, {1: 1.0, 8: 0.25}, 2.0),
        record("tv:resnet18", "cuda", L4, {1: 2.0, 8: 1.0}, 3.0),
        record("tv:resnet18", "cuda", H100, {1: 0.5, 8: 0.2}, 4.0),
    ]
    rows = analysis.model_rows(records, device="cuda")
    assert {(r.model, r.target) for r in rows} == {
        (m, t)
        for m in ("tv:resnet50", "tv:resnet18")
        for t in ("cuda/nvidia-l4-24gb", "cuda/nvidia-h100-80gb-hbm3")
    }
    only_l4 = analysis.model_rows(records, device="cuda/nvidia-l4-24gb")
    assert {r.target for r in only_l4} == {"cuda/nvidia-l4-24gb"} and len(only_l4) == 2
    bound = analysis.throughput_bound(rows, "cuda/nvidia-h100-80gb-hbm3", 1)
    assert {p.images_per_s for p in bound.points} == {1000.0, 2000.0}
    fits = analysis.memory_fits(rows)
    assert {(f.target, f.batch_size) for f in fits} >= {
        ("cuda/nvidia-l4-24gb", 1),
        ("cuda/nvidia-h100-80gb-hbm3", 8),
    }

    compared = analysis.compare_devices(rows, "cuda/nvidia-h100-80gb-hbm3", "cuda/nvidia-l4-24gb")
    ratios = {(c.model, c.batch_size): c.b_over_a for c in compared}
    assert ratios == {
        ("tv:resnet18", 1): 4.0,
        ("tv:resnet18", 8): 5.0,
        ("tv:resnet50", 1): 4.0,
        ("tv:resnet50", 8): 8.0,
    }
    # A class stands for its newest profile on any target other than the other side's.
    by_class = analysis.compare_devices(rows, "cuda", "cuda/nvidia-l4-24gb", batch_size=1)
    assert {c.a_target for c in by_class} == {"cuda/nvidia-h100-80gb-hbm3"} and len(by_class) == 2
