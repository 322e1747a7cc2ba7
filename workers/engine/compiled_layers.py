"""torch.compile's layer profiler on the CPU: each kernel inductor generated, or extern kernel it
calls, given the eager module(s) its origin FX nodes came from, through inductor's own provenance.

The profiled pass compiles the model once more (fresh, its caches off: a graph served from a cache
is not code-generated, so it carries no provenance), with three of inductor's settings:

- ``cpp.enable_kernel_profile``: each generated C++ kernel opens a profiler range,
  ``graph_<id>_<kernel>`` (a ``RecordFunction`` per call: its cost is in the profiled forward);
- ``trace.provenance_tracking_to_timeline``: inductor keeps, per compiled region, each kernel's
  origin post-grad nodes (``get_kernel_information_jsons()``, keyed ``<kernel>:<handle>``, the
  handles in the order the wrapper calls the kernels);
- ``post_grad_custom_post_pass``: :class:`NodeModules` reads each post-grad node's
  ``nn_module_stack`` (dynamo's record of the module calls around the op).

Inductor fuses across modules. A kernel whose origins lie in several modules goes whole to their
deepest common ancestor (``body`` for ``body.1`` and ``body.2``; the model's own row, ``""``, for
``body.1`` and ``pool``), its node name saying which modules it fused. A split by FLOPs would be
invented: the fused kernels are the memory-bound ops (a ReLU, a pooling, a batch norm's
arithmetic), which count no FLOPs, and their time is not in proportion to anyone's FLOPs. A kernel
the provenance does not name, and the time around the kernels (dynamo's guards, the compiled
graph's wrapper), stay unattributed. A kernel's origins are inductor's: every FX node its IR
came from, wider at times than what it computes (resnet18's kernel copying the input and weights
to channels-last also names the batch norm and ReLU beside them), and its op type is read from its
name, which inductor makes of those origins' ops.
"""

from __future__ import annotations

import ast
import re
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch._inductor import config as inductor_config
from torch._inductor.custom_graph_pass import CustomGraphPass
from torch._inductor.debug import get_kernel_information_jsons

from workers.engine.layers import ModuleTree, NodeTime, ProfiledPass

if TYPE_CHECKING:
    from torch.autograd.profiler_util import FunctionEvent

    from workers.engine.runtimes.compiled import CompiledPrepared

REGION = "Torch-Compiled Region: "
GRAPH_CALL = "## Call CompiledFxGraph"
#: Around each counted forward, so the uncounted first one is told apart.
FORWARD_RANGE = "dnnprof.compiled_forward"
#: Modules named in a fused kernel's node name (the rest as a count).
MAX_FUSED_NAMED = 4
#: Ops a generated C++ kernel names but does not compute on the CPU (inductor calls an extern
#: kernel for each): there it converts their input's layout or applies their epilogue.
_EXTERN_OPS = re.compile(r"_?(convolution|addmm|baddbmm|bmm|mm)(?=_|$)")


class NodeModules(CustomGraphPass):
    """Inductor's post-grad hook, changing nothing: each compiled region's nodes with the innermost
    module of the eager tree around them (None: dynamo recorded no module call around the op)."""

    def __init__(self, tree: ModuleTree) -> None:
        self.tree = tree
        self.by_region: dict[str, dict[str, str | None]] = {}

    def __call__(self, graph: torch.fx.Graph) -> None:
        region = REGION + str(torch._guards.CompileContext.current_compile_id())
        nodes = self.by_region.setdefault(region, {})
        for node in graph.nodes:
            stack = node.meta.get("nn_module_stack") or {}
            paths = [module_path(str(entry[0]), self.tree) for entry in stack.values()]
            nodes[node.name] = next((p for p in reversed(paths) if p is not None), None)

    def uuid(self) -> None:
        return None  # no cache: the hook must see every graph


def module_path(source: str, tree: ModuleTree) -> str | None:
    """Dynamo's name of a module call (``L['self'].layer1[0]._modules['conv1']``) as its path in
    the eager tree (``layer1.0.conv1``); None where the tree has no such module."""
    path = re.sub(r"^L\[['\"]\w+['\"]\]", "", source)
    path = re.sub(r"\._modules\[['\"]([^'\"]+)['\"]\]", r".\1", path)
    path = re.sub(r"\[['\"]?([^\]'\"]+)['\"]?\]", r".\1", path).lstrip(".")
    return path if path in tree.types else None


def common_ancestor(paths: set[str]) -> str:
    """The deepest module holding all of ``paths`` (``""``: the model)."""
    split = [p.split(".") if p else [] for p in paths]
    common: list[str] = []
    for level in zip(*split, strict=False):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return ".".join(common)


@dataclass
class Kernel:
    """One kernel call site of a compiled region, in the order the wrapper calls them."""

    name: str  # as inductor named it: ``cpp_fused_relu_1``, ``extern_kernels.convolution``
    path: str | None
    modules: list[str]  # the modules its origins lie in


def region_kernels(info: dict[str, dict[str, dict]], modules: NodeModules) -> dict[str, list[Kernel]]:
    """Inductor's provenance per compiled region (``('Torch-Compiled Region: 0/0', False)``), each
    kernel given its origins' modules' deepest common ancestor. An origin without a module stack
    serves the ops beside it (a pass made it) or, when none has one, is the model's own forward."""
    out: dict[str, list[Kernel]] = {}
    for key, kernels in info.items():
        region, backward = ast.literal_eval(key)
        if backward:
            continue
        nodes = modules.by_region.get(region, {})
        calls = []
        for handle_key, kernel in sorted(kernels.items(), key=lambda kv: _handle(kv[0])):
            origins = [n for n in kernel.get("post_grad_nodes", []) if n in nodes]
            found = {p for n in origins if (p := nodes[n]) is not None}
            if not found and origins:
                found = {""}
            path = common_ancestor(found) if found else None
            calls.append(Kernel(handle_key.rpartition(":")[0], path, sorted(found)))
        out[region] = calls
    return out


def _handle(key: str) -> int:
    handle = key.rpartition(":")[2]
    return int(handle) if handle.isdigit() else 0


def _matches(event: str, kernel: str) -> bool:
    """A profiler event is this kernel: a generated one by name (``graph_0_`` prefixed), an extern
    one by its op (``aten::convolution`` for ``extern_kernels.convolution``)."""
    generated = re.sub(r"^graph_\d+_", "", event)
    if generated != event or kernel.startswith("cpp_"):
        return generated == kernel
    return event.rpartition("::")[2] in kernel.split(".")


def kernel_kind(event: str, kernel: str) -> str:
    """The op type of a kernel's time: an extern kernel's op (its event, ``aten::addmm``); a
    generated C++ kernel's fused ops (inductor's descriptive name) less those it only feeds, or a
    copy where nothing else is left."""
    if not kernel.startswith("cpp_"):
        return event
    ops = _EXTERN_OPS.sub("", re.sub(r"^cpp_fused_|_\d+$", "", kernel))
    return ops.strip("_") or "copy"


def node_name(event: str, kernel: Kernel) -> str:
    """The event's name, and for a kernel fused across modules which (its row is their ancestor)."""
    if len(kernel.modules) < 2:
        return event
    named = kernel.modules[:MAX_FUSED_NAMED]
    more = len(kernel.modules) - len(named)
    return f"{event} (fused: {', '.join(named)}{f' and {more} more' if more else ''})"


def graph_call_nodes(call: FunctionEvent, kernels: list[Kernel]) -> list[NodeTime]:
    """The kernels one compiled graph's call ran, in order, each matched to the first call site
    not yet matched that it can be (a kernel reused at several sites runs once at each)."""
    left = list(kernels)
    nodes = []
    for event in sorted(call.cpu_children, key=lambda e: e.time_range.start):
        kernel = next((k for k in left if _matches(event.name, k.name)), None)
        if kernel is not None:
            left.remove(kernel)
        else:
            kernel = Kernel(event.name, None, [])  # not in the provenance: unattributed
        kind = kernel_kind(event.name, kernel.name)
        nodes.append(NodeTime(node_name(event.name, kernel), kind, event.cpu_time_total / 1e6, kernel.path))
    return nodes


def _enclosing(event: FunctionEvent | None, named: Callable[[str], bool]) -> FunctionEvent | None:
    """The event itself or its nearest CPU ancestor whose name is ``named``."""
    while event is not None and not named(event.name):
        event = event.cpu_parent
    return event


def compiled_nodes(events: Iterable[FunctionEvent], regions: dict[str, list[Kernel]]) -> list[NodeTime]:
    """The kernels of every counted forward's compiled graphs (the time outside them: unattributed)."""
    nodes: list[NodeTime] = []
    for event in events:
        if event.name.startswith(GRAPH_CALL) and _enclosing(event, FORWARD_RANGE.__eq__) is not None:
            region = _enclosing(event, lambda name: name.startswith(REGION))
            nodes.extend(graph_call_nodes(event, regions.get(region.name if region else "", [])))
    return nodes


def profile_compiled(
    prepared: CompiledPrepared, x: torch.Tensor, runs: int, tree: ModuleTree
) -> ProfiledPass:
    """Compile once more with inductor's provenance and kernel ranges on, then profile ``runs``
    forwards (the first under the profiler not counted) and map their kernels to modules."""
    modules = NodeModules(tree)
    info = get_kernel_information_jsons()
    info.clear()  # what an earlier compile left, keyed by compile ids that repeat after a reset
    settings = {
        "cpp.enable_kernel_profile": True,
        "trace.provenance_tracking_to_timeline": True,
        "force_disable_caches": True,
        "post_grad_custom_post_pass": modules,
    }
    forward_s = 0.0
    try:
        with inductor_config.patch(settings), warnings.catch_warnings():
            # force_disable_caches turns dynamo's profile-guided shapes off too, and warns so.
            warnings.filterwarnings("ignore", message="dynamo_pgo force disabled")
            compiled = prepared.compile()
            compiled(x)  # the compile
            regions = region_kernels(dict(info), modules)
            compiled(x)  # warm, before the profiler
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                compiled(x)  # not counted
                for _ in range(runs):
                    start = time.perf_counter()
                    with torch.profiler.record_function(FORWARD_RANGE):
                        compiled(x)
                    forward_s += time.perf_counter() - start
    finally:
        info.clear()
    return ProfiledPass(
        runtime="compile",
        source=(
            "torch.profiler over a compile of its own with inductor's provenance on "
            "(cpp.enable_kernel_profile, trace.provenance_tracking_to_timeline): each generated C++ "
            "kernel's and extern kernel's CPU time to the module of its origin FX nodes "
            "(nn_module_stack), a kernel fused across modules to their deepest common ancestor; "
            "outside the kernels (guards, the graph's wrapper): unattributed"
        ),
        runs=runs,
        batch_size=x.shape[0],
        forward_s=forward_s,
        nodes=compiled_nodes(prof.events(), regions),
    )
