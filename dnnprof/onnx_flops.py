"""FLOPs of an ONNX graph, counted from its shapes (torch-free; the API counts an upload with it).

The catalogue's convention, ``torch.utils.flop_counter``'s: one multiply-add is 2 FLOPs, and only
the operators it has formulas for are counted, convolutions (transposed too), matrix products
(Gemm, MatMul) and attention; element-wise operators, pooling and normalisation count nothing,
there as here. A counted operator whose shapes inference cannot fix, or one inside control flow or
a local function, is named in the note instead of guessed.

Shapes come from ``onnx.shape_inference`` on a skeleton of the model: the graph with its large
initialisers replaced by typed inputs, so that counting a 500 MB file copies no weights, and with
a symbolic batch axis fixed at 1 (the count is per image).
"""

from __future__ import annotations

import math
from collections import Counter

import onnx
from onnx import ModelProto, ValueInfoProto, helper

#: Initialisers up to this many elements are kept whole in the skeleton: shape inference reads the
#: values of small ones (Reshape's target shape, Slice's bounds) to propagate shapes through them.
KEEP_VALUES_UP_TO = 1024
COUNTED = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "Attention"})
CONTROL_FLOW = frozenset({"If", "Loop", "Scan"})
#: Operators with multiply-adds that torch's counter also counts but that have no formula here.
NOT_COUNTED = frozenset(
    {"Einsum", "ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul", "DeformConv"}
)

Shape = list[int | None]


def count_graph_flops(model: ModelProto, image_input: str) -> tuple[int, str | None]:
    """FLOPs per image of ``model`` fed one batch on ``image_input``, and a note naming what could
    not be counted (None where everything that has a formula was counted)."""
    inferred = onnx.shape_inference.infer_shapes(
        skeleton(model, image_input), strict_mode=False, data_prop=True
    )
    shapes = known_shapes(inferred)
    fill_from_declared(shapes, model, image_input)
    batch = shapes.get(image_input, [1])[0] or 1
    total, missed = 0, Counter()
    for node in inferred.graph.node:
        if node.op_type in COUNTED:
            flops = node_flops(node, shapes)
            if flops is None:
                missed[f"{node.op_type} (shapes unknown)"] += 1
            else:
                total += flops
        elif node.op_type in NOT_COUNTED:
            missed[f"{node.op_type} (no formula)"] += 1
        elif node.op_type in CONTROL_FLOW:
            missed[f"{node.op_type} (control flow: its bodies)"] += 1
        elif node.domain not in ("", "ai.onnx"):
            missed[f"{node.domain}::{node.op_type} (a local function)"] += 1
    note = None
    if missed:
        note = "not counted: " + ", ".join(f"{n} × {what}" for what, n in sorted(missed.items()))
    return total // batch, note


def skeleton(model: ModelProto, image_input: str) -> ModelProto:
    """The graph without its weights (large initialisers become inputs of their type and shape) nor
    its declared intermediate shapes, which carry the symbolic batch axis into inference."""
    graph = model.graph
    kept = [t for t in graph.initializer if math.prod(t.dims) <= KEEP_VALUES_UP_TO]
    typed = [
        helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
        for t in graph.initializer
        if math.prod(t.dims) > KEEP_VALUES_UP_TO
    ]
    initialised = {t.name for t in graph.initializer}
    inputs = [per_image(v) if v.name == image_input else v for v in graph.input if v.name not in initialised]
    light = helper.make_graph(
        list(graph.node), graph.name, inputs + typed, [bare(v) for v in graph.output], kept
    )
    light.sparse_initializer.extend(graph.sparse_initializer)
    out = helper.make_model(
        light,
        opset_imports=list(model.opset_import),
        ir_version=model.ir_version,
        functions=list(model.functions),
    )
    return out


def bare(value: ValueInfoProto) -> ValueInfoProto:
    """An output by name and element type only: its declared shape (a symbolic batch) would
    override the inferred one."""
    return helper.make_tensor_value_info(value.name, value.type.tensor_type.elem_type, None)


def per_image(value: ValueInfoProto) -> ValueInfoProto:
    """The image input with a symbolic batch axis fixed at 1 (a fixed one is kept: the count is
    divided by it)."""
    copy = ValueInfoProto()
    copy.CopyFrom(value)
    batch = copy.type.tensor_type.shape.dim[0]
    if not batch.HasField("dim_value"):
        batch.dim_value = 1
    return copy


def known_shapes(model: ModelProto) -> dict[str, Shape]:
    graph = model.graph
    shapes: dict[str, Shape] = {}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        kind = value.type.tensor_type
        if kind.HasField("shape"):
            shapes[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in kind.shape.dim]
    for tensor in graph.initializer:
        shapes[tensor.name] = list(tensor.dims)
    return shapes


def fill_from_declared(shapes: dict[str, Shape], model: ModelProto, image_input: str) -> None:
    """Where inference lost a dimension (a Reshape to a computed shape, which ONNX's data
    propagation does not follow), the shape the file declares, its symbolic batch axis at 1:
    exporters write each intermediate's shape in terms of the input's batch (torch.export does)."""
    graph = model.graph
    image = next(v for v in graph.input if v.name == image_input).type.tensor_type.shape.dim[0]
    batch = image.dim_param if not image.HasField("dim_value") else None
    for value in [*graph.value_info, *graph.output]:
        inferred = shapes.get(value.name)
        if inferred is not None and None not in inferred:
            continue
        kind = value.type.tensor_type
        if not kind.HasField("shape"):
            continue
        declared = [
            d.dim_value if d.HasField("dim_value") else (1 if batch and d.dim_param == batch else None)
            for d in kind.shape.dim
        ]
        if inferred is None or sum(d is None for d in declared) < sum(d is None for d in inferred):
            shapes[value.name] = declared


def node_flops(node: onnx.NodeProto, shapes: dict[str, Shape]) -> int | None:
    """2 × the multiply-adds of one counted node, as torch.utils.flop_counter's formulas give them."""
    got = [shapes.get(name) if name else None for name in node.input]
    out = shapes.get(node.output[0])
    if node.op_type == "Attention":
        return attention_flops(node, got)
    if any(s is None or None in s for s in [*got[:2], out]):
        return None
    x, w = got[0], got[1]
    if node.op_type == "Conv":  # conv_flop_count: prod(out) × C_in/groups × prod(kernel)
        return 2 * math.prod(out) * math.prod(w[1:])
    if node.op_type == "ConvTranspose":  # over the input's positions: prod(x) × C_out/groups × prod(kernel)
        return 2 * x[0] * math.prod(x[2:]) * math.prod(w)
    if node.op_type == "Gemm":
        trans_a = next((a.i for a in node.attribute if a.name == "transA"), 0)
        inner = x[0] if trans_a else x[1]
        return 2 * math.prod(out) * inner
    return 2 * math.prod(out) * x[-1]  # MatMul: each output element is a dot product over x's last axis


def attention_flops(node: onnx.NodeProto, got: list[Shape | None]) -> int | None:
    """Opset 23's Attention: Q·Kᵀ and the weights times V, sdpa's two matrix products."""
    q, k, v = [*got, None, None, None][:3]
    if any(s is None or None in s for s in (q, k, v)):
        return None
    attrs = {a.name: a.i for a in node.attribute}
    if len(q) == 4:  # (batch, heads, sequence, head size)
        b, heads, sq, d = q
        skv, dv = k[2], v[3]
    else:  # (batch, sequence, hidden): the heads are attributes
        heads, kv_heads = attrs.get("q_num_heads", 1), attrs.get("kv_num_heads", 1)
        b, sq, d = q[0], q[1], q[2] // heads
        skv, dv = k[1], v[2] // kv_heads
    return 2 * b * heads * sq * skv * d + 2 * b * heads * sq * skv * dv
