"""What a request may cost a device, estimated before it is queued (torch-free, from the catalogue).

A request for batch 1024 at 1024 px would need an input tensor of 12.9 GB and, for a ResNet-18,
about 64 GiB of activations: no device holds that, and a worker would spend minutes finding out.
The estimate is a deliberately generous upper bound (it refuses only what cannot fit anywhere):
the weights in the requested precision, plus per image :data:`ACTIVATION_BYTES_PER_INPUT_BYTE`
times the input image's bytes (VGG's first block keeps two 64-channel maps of the full image
alive at once, about 43 times the input; 64 leaves room).

Time too: ``resnet18`` at 1024 px, 16 batch sizes, 1,000 runs and 10 repeats is over a million
images of 76 GFLOPs, hours on any CPU, and would hold a worker until its time limit failed it. The
timed passes alone need the model's FLOPs times the images timed; over the fastest a device of the
class can go (:data:`FASTEST_FLOPS`, generous ceilings) that is a lower bound on the job's time,
and a request whose lower bound is past the time limit cannot finish.
"""

from __future__ import annotations

from dnnprof.contract import ModelInfo, ProfileSettings

ACTIVATION_BYTES_PER_INPUT_BYTE = 64
DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "amp": 4}
GB = 1e9

#: The most FLOP/s a device of each class sustains, set well above any (so only what cannot finish
#: anywhere is refused): the largest server CPUs peak under 10 fp32 TFLOP/s with AVX-512; Jetson
#: AGX Orin's GPU peaks at 5.3 fp32 TFLOP/s (NVIDIA's module data sheet), 100 leaves room for its
#: tensor cores; NVIDIA's B200 data sheet gives 2.25 dense fp16 PFLOP/s.
FASTEST_FLOPS = {"cpu": 10e12, "jetson": 100e12, "cuda": 2.5e15}


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


def images_timed(settings: ProfileSettings) -> int:
    """Images the timed passes run, at least (warm-ups and memory passes come on top)."""
    return sum(settings.batch_sizes) * settings.runs * settings.repeats


def flops_per_image(info: ModelInfo, input_size: int, counted_flops: int | None = None) -> float | None:
    """The model's FLOPs at this input size: published (or counted) at its own size, scaled by the
    pixels (a convolution's work grows with them); None where neither is known."""
    if info.published_gmacs:
        flops = 2 * info.published_gmacs * 1e9
    elif counted_flops:
        flops = float(counted_flops)
    else:
        return None
    return flops * (input_size / info.input_size) ** 2


def too_slow(
    info: ModelInfo, settings: ProfileSettings, limit_s: float, counted_flops: int | None = None
) -> str | None:
    """Why the request cannot finish inside the time limit, or None where it may."""
    per_image = flops_per_image(info, settings.input_size, counted_flops)
    if per_image is None:
        return None
    images = images_timed(settings)
    fastest = FASTEST_FLOPS[settings.device]
    need_s = per_image * images / fastest
    if need_s <= limit_s:
        return None
    return (
        f"{images:,} images of {per_image / 1e9:.1f} GFLOPs each (batch sizes x runs x repeats) need "
        f"an estimated {need_s:,.0f} s of timed passes even at {fastest / 1e12:g} TFLOP/s, faster than "
        f"any {settings.device} device runs, more than the time limit of {limit_s:g} s "
        "(DNNPROF_TASK_SOFT_TIME_LIMIT): ask for fewer batch sizes, runs or repeats, or a smaller input"
    )
