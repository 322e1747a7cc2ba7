"""FLOPs of one image, counted once per (model, input size) and the same whatever device measures.

``torch.utils.flop_counter`` counts the aten ops it has formulas for. Two fast paths hide attention
from it: ``nn.MultiheadAttention`` under no-grad runs ``aten._native_multi_head_attention`` (no
formula: torchvision's ViTs lose a third of their FLOPs) and scaled-dot-product attention on a CPU
picks ``_scaled_dot_product_flash_attention_for_cpu`` (no formula either, while the CUDA kernels
have one). So the count runs in fp32 on the CPU (or the meta device) with the MHA fast path off
and SDPA on its math path, whose matmuls the counter knows; a formula is registered for the CPU
flash kernel as well, for code that calls it by name. One multiply-add = 2 FLOPs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

from dnnprof.contract import FlopCount

#: Bump when the way FLOPs are counted changes, so cached counts are not reused.
FLOP_METHOD_VERSION = 2
METHOD = (
    "torch.utils.flop_counter, fp32, batch 1, {device}; MHA fast path off, SDPA math path "
    "(attention counted); 1 multiply-add = 2 FLOPs"
)
#: A gap to a published figure above this is stated in the result (``flops_note``).
PUBLISHED_TOLERANCE = 0.05


def _register_cpu_flash_formula() -> None:
    """``_scaled_dot_product_flash_attention_for_cpu`` does the work the registered CUDA flash
    kernel does: give it the same formula (query, key, value come first in both)."""
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    registry = getattr(flop_counter, "flop_registry", None)
    if op is None or registry is None or op in registry or not hasattr(flop_counter, "sdpa_flop_count"):
        return

    @flop_counter.register_flop_formula(op)
    def _cpu_flash_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


_register_cpu_flash_formula()


@contextlib.contextmanager
def countable_attention() -> Iterator[None]:
    """Attention on the paths the counter has formulas for, restored afterwards."""
    mha = getattr(torch.backends, "mha", None)
    fastpath = mha.get_fastpath_enabled() if mha is not None else None
    with contextlib.ExitStack() as stack:
        if mha is not None:
            mha.set_fastpath_enabled(False)
            stack.callback(mha.set_fastpath_enabled, fastpath)
        with contextlib.suppress(ImportError):
            from torch.nn.attention import SDPBackend, sdpa_kernel

            stack.enter_context(sdpa_kernel(SDPBackend.MATH))
        yield


@contextlib.contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """Parameters that do not require grad: the counter's module tracker then sets no autograd
    hooks (PiT's blocks pass tuples that hold a parameter, which those hooks cannot follow)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def count_flops(model: nn.Module, example: torch.Tensor) -> int:
    """FLOPs of ``model(example)``; ``example`` on the CPU or the meta device, in fp32."""
    counter = FlopCounterMode(display=False)
    with _frozen(model), torch.no_grad(), countable_attention(), counter:
        model(example)
    return int(counter.get_total_flops())


def count_model_flops(model: nn.Module, input_size: int, published_gmacs: float | None = None) -> FlopCount:
    """The FLOP count of one image for a model on the CPU (fp32), never raising: a model the
    counter cannot follow gets ``flops=None`` and the reason, and its profile goes on."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    method = METHOD.format(device=device.type)
    try:
        example = torch.zeros(1, 3, input_size, input_size, device=device)
        flops = count_flops(model, example)
    except Exception as exc:  # noqa: BLE001 - a count that fails must not fail the profile
        reason = str(exc).splitlines()[0][:300] if str(exc) else ""
        return FlopCount(flops=None, method=method, note=f"FLOPs not counted: {type(exc).__name__}: {reason}")
    return FlopCount(flops=flops, method=method, note=published_gap(flops, published_gmacs))


def published_gap(flops: int, published_gmacs: float | None) -> str | None:
    """A sentence where the count and the published figure differ by more than the tolerance."""
    if not published_gmacs or flops <= 0:
        return None
    gmacs = flops / 2e9
    gap = gmacs / published_gmacs - 1
    if abs(gap) <= PUBLISHED_TOLERANCE:
        return None
    return (
        f"counted {gmacs:.3f} GMACs, {gap:+.1%} from the published {published_gmacs:.3f} GMACs "
        f"(over the {PUBLISHED_TOLERANCE:.0%} tolerance): ops without a formula, or a published "
        "figure for another input size or form"
    )
