"""What a request may cost a device, estimated before it is queued (torch-free, from the catalogue).

A request for batch 1024 at 1024 px would need an input tensor of 12.9 GB and, for a ResNet-18,
about 64 GiB of activations: no device holds that, and a worker would spend minutes finding out.
The estimate is a deliberately generous upper bound (it refuses only what cannot fit anywhere):
the weights in the requested precision, plus per image :data:`ACTIVATION_BYTES_PER_INPUT_BYTE`
times the input image's bytes (VGG's first block keeps two 64-channel maps of the full image
alive at once, about 43 times the input; 64 leaves room).
"""

from __future__ import annotations

from dnnprof.contract import ModelInfo

ACTIVATION_BYTES_PER_INPUT_BYTE = 64
DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "amp": 4}
GB = 1e9


def estimate_bytes(info: ModelInfo, batch_size: int, input_size: int, precision: str) -> int:
    """Device memory a batch would need at most: weights + activations of every image."""
    itemsize = DTYPE_BYTES[precision]
    weights = (info.published_params or 0) * itemsize
    per_image = 3 * input_size * input_size * itemsize * ACTIVATION_BYTES_PER_INPUT_BYTE
    return weights + batch_size * per_image


def too_costly(
    info: ModelInfo, batch_size: int, input_size: int, precision: str, limit_bytes: float, limit_source: str
) -> str | None:
    """Why the request cannot fit, or None where it may."""
    need = estimate_bytes(info, batch_size, input_size, precision)
    if need <= limit_bytes:
        return None
    return (
        f"batch {batch_size} at {input_size}x{input_size} px in {precision} needs an estimated "
        f"{need / GB:.1f} GB (weights and a generous bound on activations), more than "
        f"{limit_bytes / GB:.1f} GB: {limit_source}"
    )
