"""One module tree for every runtime's layer profile: the eager model's modules with their own
parameters and FLOPs, and what turns a runtime's node times (already given a module path, or
none) into a :class:`~dnnprof.contract.LayerProfile`.

FLOPs per module come from ``FlopCounterMode.get_flop_counts()``, which is keyed by module already
(inclusive of the children: a module's own FLOPs are its count less its children's), counted as the
profile's total is (:mod:`.flops`: fp32, batch 1, attention on countable paths), so the layers'
FLOPs add up to the profile's. The runtimes' profilers are in :mod:`.layer_profilers`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from dnnprof.contract import OP_TYPES, LayerProfile, LayerTime, OpTypeShare
from workers.engine.flops import _frozen, countable_attention

#: The runtime names of each op-type class, matched in this order on the lower-cased op name (its
#: part after ``::``, ``Fused`` dropped): eager's aten ops, ONNX op types, OpenVINO node types.
_CLASSES: tuple[tuple[str, str], ...] = (
    ("attention", r"attention|sdpa|scaled_?dot_?product"),
    (
        "data movement",
        r"^(convert|reorder\w*|transpose|permute|reshape|view|_?unsafe_view|flatten|cat|concat\w*|split\w*|"
        r"slice|gather|squeeze|unsqueeze|expand|copy_?|_to_copy|to|contiguous|clone|pad|constant_pad_nd|"
        r"shape\w*|chunk|narrow|select|stack|roll|pixel_shuffle|depthtospace|spacetodepth|"
        r"shufflechannels|channel_shuffle|identity|tile|broadcast|as_strided|unbind|t)$",
    ),
    ("convolution", r"conv"),
    ("matmul/linear", r"linear|addmm|matmul|gemm|^b?mm$|baddbmm|fullyconnected|innerproduct|einsum"),
    ("normalisation", r"norm|^mvn$"),
    ("pooling", r"pool|^mean$|reduce|^avg|^max$"),
    (
        "activation",
        r"relu|gelu|silu|swish|sigmoid|tanh|^elu|clamp|clip|mish|softmax|softplus|^erf|hard|^exp$|prelu",
    ),
    ("elementwise", r"^(add|mul|sub|div|rsub|eltwise|subgraph|pow|sqrt|rsqrt|where|sum|neg|abs|max|min)_?$"),
)


def op_class(name: str, depthwise: bool = False) -> str:
    """The op-type class of a runtime's op or node type (``aten::conv2d``, ``FusedConv``,
    ``GroupConvolution``); a convolution in a depthwise module is a depthwise convolution."""
    op = name.rpartition("::")[2].split(".")[0].lower()
    op = op.removeprefix("fused")
    for cls, pattern in _CLASSES:
        if re.search(pattern, op):
            return "depthwise convolution" if cls == "convolution" and depthwise else cls
    return "other"


def is_depthwise(module: nn.Module) -> bool:
    return (
        isinstance(module, nn.modules.conv._ConvNd)
        and module.groups > 1
        and module.groups == module.in_channels
    )


@dataclass
class ModuleTree:
    """The eager model's modules by path (``""`` is the model), each with its own figures."""

    types: dict[str, str]
    params: dict[str, int]
    depthwise: set[str]
    #: Own FLOPs per image, and per aten op (for the op-type shares).
    flops: dict[str, int]
    flops_by_op: dict[str, dict[str, int]]
    #: Every parameter and buffer by its name, to the module that holds it (ONNX initializers are
    #: named so by the exporter).
    owner: dict[str, str]
    #: The named_modules order (ties in topological order are broken by it).
    index: dict[str, int] = field(default_factory=dict)

    @property
    def total_flops(self) -> int:
        return sum(self.flops.values())


def module_tree(model: nn.Module, input_size: int) -> ModuleTree:
    """The tree of ``model`` (fp32, on the CPU or the meta device) with its FLOPs per module."""
    named = dict(model.named_modules())
    owner = {name: name.rpartition(".")[0] for name, _ in model.named_parameters()}
    owner.update({name: name.rpartition(".")[0] for name, _ in model.named_buffers()})
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    counter = FlopCounterMode(display=False)
    with _frozen(model), torch.no_grad(), countable_attention(), counter:
        model(torch.zeros(1, 3, input_size, input_size, device=device))
    inclusive = _by_path(counter.get_flop_counts(), type(model).__name__)
    own: dict[str, dict[str, int]] = {}
    for path, ops in inclusive.items():
        mine = dict(ops)
        for child, child_ops in inclusive.items():
            if child != path and _parent(child) == path:
                for op, n in child_ops.items():
                    mine[op] = mine.get(op, 0) - n
        own[path] = {op: n for op, n in mine.items() if n > 0}
    return ModuleTree(
        types={p: type(m).__name__ for p, m in named.items()},
        params={p: sum(t.numel() for t in m.parameters(recurse=False)) for p, m in named.items()},
        depthwise={p for p, m in named.items() if is_depthwise(m)},
        flops={p: sum(ops.values()) for p, ops in own.items()},
        flops_by_op=own,
        owner=owner,
        index={p: i for i, p in enumerate(named)},
    )


def _by_path(counts: dict, root: str) -> dict[str, dict[str, int]]:
    """``get_flop_counts()``'s keys (``ResNet.layer1.0.conv1``, ``Global``) as module paths."""
    out: dict[str, dict[str, int]] = {}
    for key, ops in counts.items():
        if key == root:
            path = ""
        elif key.startswith(root + "."):
            path = key[len(root) + 1 :]
        else:
            continue  # "Global": the root's count again
        out[path] = {str(op).split(".")[-1]: int(n) for op, n in ops.items()}
    return out


def _parent(path: str) -> str | None:
    return None if path == "" else path.rpartition(".")[0]


def ancestors(path: str) -> list[str]:
    """``layer1.0.conv1`` -> ``["", "layer1", "layer1.0"]``."""
    parts = path.split(".") if path else []
    return [""] + [".".join(parts[:i]) for i in range(1, len(parts))]


@dataclass
class NodeTime:
    """One runtime node (or op, kernel) in the profiled runs: seconds over all of them."""

    name: str
    kind: str  # its op or node type, for the op-type class
    seconds: float
    path: str | None  # the module it is attributed to; None: unattributed


@dataclass
class ProfiledPass:
    """What a runtime's profiler measured, nodes in the order they first ran."""

    runtime: str
    source: str
    runs: int
    batch_size: int
    forward_s: float  # the profiled forwards, all runs
    nodes: list[NodeTime]
    overlapping: bool = False


NOTE = (
    "layer times come from a separate profiled pass after the timed runs (never inside them: the "
    "profile's latency figures are unaffected); the profiler's overhead is in them, as "
    "forward_ms_per_image against timed_ms_per_image shows"
)
#: Node names kept per layer and unattributed (the largest first).
MAX_NODE_NAMES = 12


def build_profile(tree: ModuleTree, measured: ProfiledPass, timed_ms: float | None) -> LayerProfile:
    """The layer profile of one profiled pass: each module's own time beside its own FLOPs."""
    per_image = 1e3 / (measured.runs * measured.batch_size)  # seconds over the runs -> ms per image
    forward_ms = measured.forward_s * per_image
    time_of: dict[str, float] = defaultdict(float)
    names: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    by_class: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    first: dict[str, int] = {}
    op_ms: dict[str, float] = defaultdict(float)
    for i, node in enumerate(measured.nodes):
        ms = node.seconds * per_image
        key = node.path if node.path is not None else None
        cls = op_class(node.kind, key in tree.depthwise if key is not None else False)
        op_ms[cls] += ms
        if key is None:
            names["\0unattributed"][node.name] += ms
            continue
        time_of[key] += ms
        names[key][node.name] += ms
        by_class[key][cls] += ms
        for p in [key, *ancestors(key)]:
            first.setdefault(p, i)
    attributed = sum(time_of.values())
    layers = _layers(tree, time_of, names, by_class, first, forward_ms)
    unattributed_names = names.get("\0unattributed", {})
    return LayerProfile(
        batch_size=measured.batch_size,
        runtime=measured.runtime,
        source=measured.source,
        note=NOTE,
        runs=measured.runs,
        forward_ms_per_image=forward_ms,
        timed_ms_per_image=timed_ms,
        attributed_ms_per_image=attributed,
        unattributed_ms_per_image=max(0.0, forward_ms - attributed),
        unattributed_nodes=_top(unattributed_names),
        node_coverage=attributed / sum(op_ms.values()) if op_ms else None,
        overlapping=measured.overlapping,
        flops=tree.total_flops,
        layers=layers,
        op_types=_op_types(tree, op_ms),
    )


def _layers(tree, time_of, names, by_class, first, forward_ms) -> list[LayerTime]:
    """Every module that has time, FLOPs or parameters of its own, and its ancestors (so a tree
    collapsed to a depth has their types), in the order they first ran."""
    keep = {p for p in tree.types if time_of.get(p) or tree.flops.get(p) or tree.params.get(p)}
    keep |= {a for p in keep for a in ancestors(p)}
    late = len(tree.index) + 1
    ordered = sorted(keep, key=lambda p: (first.get(p, late), tree.index.get(p, late)))
    out = []
    for order, path in enumerate(ordered):
        ms, flops = time_of.get(path, 0.0), tree.flops.get(path, 0)
        classes = by_class.get(path) or _flop_classes(tree, path)
        out.append(
            LayerTime(
                path=path,
                type=tree.types[path],
                order=order,
                ms_per_image=ms,
                share=ms / forward_ms if forward_ms > 0 else 0.0,
                flops=flops,
                params=tree.params.get(path, 0),
                flops_per_s=flops / (ms / 1e3) if ms > 0 and flops else None,
                op_type=max(classes, key=classes.get) if classes else "other",
                nodes=_top(names.get(path, {})),
            )
        )
    return out


def _flop_classes(tree: ModuleTree, path: str) -> dict[str, float]:
    depthwise = path in tree.depthwise
    classes: dict[str, float] = defaultdict(float)
    for op, n in tree.flops_by_op.get(path, {}).items():
        classes[op_class(op, depthwise)] += n
    return classes


def _op_types(tree: ModuleTree, op_ms: dict[str, float]) -> list[OpTypeShare]:
    flops: dict[str, float] = defaultdict(float)
    for path in tree.flops_by_op:
        for cls, n in _flop_classes(tree, path).items():
            flops[cls] += n
    total_ms, total_flops = sum(op_ms.values()), sum(flops.values())
    return [
        OpTypeShare(
            op_type=cls,
            ms_per_image=op_ms.get(cls, 0.0),
            time_share=op_ms.get(cls, 0.0) / total_ms if total_ms > 0 else 0.0,
            flops=int(flops.get(cls, 0)),
            flop_share=flops.get(cls, 0) / total_flops if total_flops > 0 else 0.0,
        )
        for cls in OP_TYPES
        if op_ms.get(cls) or flops.get(cls)
    ]


def _top(times: dict[str, float]) -> list[str]:
    return [name for name, _ in sorted(times.items(), key=lambda kv: -kv[1])[:MAX_NODE_NAMES]]
