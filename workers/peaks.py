"""Vendor peak throughput, to report achieved FLOP/s as a share of what the device can do.

Dense (no sparsity) figures from the vendors' data sheets, in TFLOP/s, matched on whole words of
the CUDA device name (so the L40 is not taken for the L4). fp32 is compared with the plain FP32
peak (cuDNN may use TF32 tensor cores for fp32 convolutions on Ampere and later, so the share can
exceed 1 there); fp16, bf16 and amp with the 16-bit tensor-core peak. Devices not listed get no
share rather than a guess. Torch-free: the job assembles results with it.
"""

from __future__ import annotations

import re

# name words (most specific first) -> {precision: TFLOP/s}
PEAK_TFLOPS: list[tuple[str, dict[str, float]]] = [
    ("h200", {"fp32": 67.0, "fp16": 989.5, "bf16": 989.5}),
    ("h100 sxm", {"fp32": 67.0, "fp16": 989.5, "bf16": 989.5}),
    ("h100 80gb hbm3", {"fp32": 67.0, "fp16": 989.5, "bf16": 989.5}),  # how NVML names the SXM part
    ("h100 nvl", {"fp32": 60.0, "fp16": 835.0, "bf16": 835.0}),
    ("h100 pcie", {"fp32": 51.0, "fp16": 756.5, "bf16": 756.5}),
    ("a100", {"fp32": 19.5, "fp16": 312.0, "bf16": 312.0}),
    ("l40s", {"fp32": 91.6, "fp16": 362.05, "bf16": 362.05}),
    ("l40", {"fp32": 90.5, "fp16": 181.05, "bf16": 181.05}),
    ("l4", {"fp32": 30.3, "fp16": 121.0, "bf16": 121.0}),
    ("v100", {"fp32": 15.7, "fp16": 125.0}),
    ("titan xp", {"fp32": 12.15}),
]


def _words(text: str) -> str:
    return " " + " ".join(re.findall(r"[a-z0-9]+", text.lower())) + " "


def peak_flops(device_name: str, precision: str) -> float | None:
    """FLOP/s (not TFLOP/s) for this device and precision, or None where unknown."""
    key = "fp16" if precision == "amp" else precision
    name = _words(device_name)
    for fragment, peaks in PEAK_TFLOPS:
        if _words(fragment) in name:
            tflops = peaks.get(key)
            return tflops * 1e12 if tflops is not None else None
    return None
