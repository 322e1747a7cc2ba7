"""An uploaded ONNX file, checked without running it (issue 42). Torch-free: the API imports it.

The file is untrusted. Only an ONNX ``ModelProto`` is taken: a pickle or a zip archive (a
``torch.save`` checkpoint, a ``.pt2``) runs code when loaded, so neither is ever loaded here.
ONNX's own loaders have had path-traversal and overwrite CVEs through tensors whose data lives in
another file (CVE-2022-25882, CVE-2024-27318, CVE-2025-51480, and the symlink bypasses fixed in
onnx 1.21), so a model with any external-data tensor is refused before onnx's checker sees it,
and nothing here ever opens a path named by the file. What is left is checked by
``onnx.checker.check_model(full_check=True)`` (which runs strict shape inference), then for what
the service can profile: operators of the standard ONNX domain only, one rank-4 float image input.
"""

from __future__ import annotations

import pickletools
from collections.abc import Iterator

import onnx
from google.protobuf.message import DecodeError
from onnx import AttributeProto, GraphProto, ModelProto, TensorProto

from dnnprof.onnx_flops import count_graph_flops
from dnnprof.upload_contract import ACCEPTED, Limits, OnnxSummary, TensorInfo, UploadRefused

__all__ = ["Limits", "OnnxSummary", "UploadRefused", "inspect_onnx"]

#: Operator domains both ONNX runtimes here (ONNX Runtime, OpenVINO) implement: the standard one.
STANDARD_DOMAINS = frozenset({"", "ai.onnx"})
MESSAGE_LIMIT = 400


def refuse(detail: str) -> UploadRefused:
    return UploadRefused(422, detail)


def inspect_onnx(data: bytes, limits: Limits) -> OnnxSummary:
    """The summary of an uploaded file, or :class:`UploadRefused` saying why it is not taken. A file
    that trips anything else in onnx or protobuf is refused too (a 422 naming the error), never a
    server error: it is hostile input until proven otherwise."""
    try:
        return summarise(data, limits)
    except UploadRefused:
        raise
    except Exception as exc:  # whatever a crafted file makes a parser raise
        raise refuse(
            f"the file could not be checked as an ONNX model: {type(exc).__name__}: {first_lines(exc)}"
        ) from exc


def summarise(data: bytes, limits: Limits) -> OnnxSummary:
    if len(data) > limits.max_bytes:
        raise refuse(
            f"the file is {len(data)} bytes, over the upload cap of {limits.max_bytes} "
            "(DNNPROF_MAX_UPLOAD_MB)"
        )
    model = parse(data)
    if found := next(external_tensors(model), None):
        raise refuse(
            f"tensor {found[0][:100]!r} keeps its data in another file (location "
            f"{found[1][:200]!r}); uploads must hold every tensor inside the file (external data is "
            "refused: a path in a model is never opened here). Save it with onnx.save(model, path, "
            "save_as_external_data=False) or torch.onnx.export(..., external_data=False)"
        )
    nodes = count_nodes(model)
    if nodes > limits.max_nodes:
        raise refuse(
            f"the graph has {nodes} nodes, more than the {limits.max_nodes} an upload may have "
            "(DNNPROF_MAX_UPLOAD_NODES)"
        )
    check(model)
    check_domains(model)
    image = image_input(model)
    try:
        flops, note = count_graph_flops(model, image.name)
    except Exception as exc:  # noqa: BLE001 - a model onnx's checker takes is profiled uncounted
        flops, note = None, f"not counted: inferring the graph's shapes failed ({first_lines(exc)})"
    outputs = [tensor_info(v) for v in model.graph.output]
    last = outputs[0].shape[-1] if outputs and outputs[0].shape else None
    return OnnxSummary(
        input=image,
        outputs=outputs,
        num_classes=last if isinstance(last, int) else None,
        opset=standard_opset(model),
        ir_version=model.ir_version,
        producer=f"{model.producer_name} {model.producer_version}".strip(),
        nodes=nodes,
        params=count_params(model.graph),
        flops=flops,
        flops_note=note,
    )


def parse(data: bytes) -> ModelProto:
    """The file as a ``ModelProto``; a pickle, a zip or anything else is a 415 saying what is taken."""
    kind = other_format(data)
    if kind is not None:
        raise UploadRefused(
            415,
            f"the file is {kind}, not ONNX: such files run code when loaded and are never loaded here; "
            f"this endpoint takes {ACCEPTED}",
        )
    model = ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeWarning, ValueError) as exc:
        raise UploadRefused(
            415, f"the file does not parse as an ONNX ModelProto ({exc}); this endpoint takes {ACCEPTED}"
        ) from exc
    if model.ir_version <= 0 or not model.opset_import or not model.graph.node:
        raise UploadRefused(
            415,
            "the file parses as protobuf but is no ONNX model (no IR version, opset import or "
            f"graph nodes); this endpoint takes {ACCEPTED}",
        )
    return model


def other_format(data: bytes) -> str | None:
    """A format recognised by its first bytes, where the file is one ONNX is not."""
    if data[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        return "a zip archive (a torch.save checkpoint, a .pt2 ExportedProgram, a TorchScript file)"
    if len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5:  # pickle's PROTO opcode
        return f"a Python pickle (protocol {data[1]})"
    if data[:1] in (b"(", b"]", b"}") and is_pickle(data[:4096]):
        return "a Python pickle"
    if data[:2] == b"\x1f\x8b":
        return "gzip-compressed"
    return None


def is_pickle(head: bytes) -> bool:
    """Old pickle protocols have no header: the head decodes as opcodes until it is cut short."""
    try:
        for _ in pickletools.genops(head):
            pass
    except ValueError as exc:
        return "no STOP" in str(exc) or "not enough data" in str(exc)
    except Exception:  # noqa: BLE001 - anything else means it is not a pickle
        return False
    return True


def graphs(model: ModelProto) -> Iterator[GraphProto]:
    """The main graph and every subgraph (If, Loop, Scan bodies), local functions' included."""
    pending = [model.graph]
    pending.extend(g for f in model.functions for n in f.node for a in n.attribute for g in subgraphs(a))
    while pending:
        graph = pending.pop()
        yield graph
        pending.extend(g for n in graph.node for a in n.attribute for g in subgraphs(a))


def subgraphs(attribute: AttributeProto) -> list[GraphProto]:
    if attribute.type == AttributeProto.GRAPH:
        return [attribute.g]
    if attribute.type == AttributeProto.GRAPHS:
        return list(attribute.graphs)
    return []


def all_nodes(model: ModelProto) -> Iterator[onnx.NodeProto]:
    for graph in graphs(model):
        yield from graph.node
    for function in model.functions:
        yield from function.node


def tensors(model: ModelProto) -> Iterator[TensorProto]:
    """Every tensor the file holds: initialisers, sparse ones, and attribute values."""
    for graph in graphs(model):
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield sparse.values
            yield sparse.indices
    for node in all_nodes(model):
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("sparse_tensor"):
                yield attribute.sparse_tensor.values
                yield attribute.sparse_tensor.indices


def external_tensors(model: ModelProto) -> Iterator[tuple[str, str]]:
    """(name, location) of each tensor whose data is said to be in another file."""
    for tensor in tensors(model):
        if tensor.data_location == TensorProto.EXTERNAL or len(tensor.external_data):
            location = next((e.value for e in tensor.external_data if e.key == "location"), "")
            yield tensor.name, location


def count_nodes(model: ModelProto) -> int:
    return sum(1 for _ in all_nodes(model))


def check(model: ModelProto) -> None:
    """onnx's own full check: the IR, each node against its operator's schema, strict shape inference."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise refuse(f"onnx.checker refuses the model: {first_lines(exc)}") from exc


def first_lines(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:MESSAGE_LIMIT] + ("…" if len(text) > MESSAGE_LIMIT else "")


def check_domains(model: ModelProto) -> None:
    """Operators of the standard ONNX domain only, or functions the file defines from them: a
    custom domain's kernels exist in no runtime here (and would be a plugin to load)."""
    local = {(f.domain, f.name) for f in model.functions}
    foreign = sorted(
        {
            f"{n.domain}::{n.op_type}"
            for n in all_nodes(model)
            if n.domain not in STANDARD_DOMAINS and (n.domain, n.op_type) not in local
        }
    )
    if foreign:
        shown = ", ".join(foreign[:10]) + (f" and {len(foreign) - 10} more" if len(foreign) > 10 else "")
        raise refuse(
            f"operators outside the standard ONNX domain: {shown}; ONNX Runtime and OpenVINO here "
            "run the standard domain (ai.onnx) only"
        )


def standard_opset(model: ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in STANDARD_DOMAINS), 0)


def tensor_info(value: onnx.ValueInfoProto) -> TensorInfo:
    kind = value.type.tensor_type
    dims: list[int | str] = [
        d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in kind.shape.dim
    ]
    return TensorInfo(name=value.name, shape=dims, type=TensorProto.DataType.Name(kind.elem_type))


def image_input(model: ModelProto) -> TensorInfo:
    """The one image input: rank 4 (N, C, H, W), float, channels, height and width fixed."""
    initialised = {t.name for t in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initialised]
    if len(inputs) != 1:
        names = ", ".join(repr(v.name[:60]) for v in inputs[:5])
        raise refuse(
            f"the model has {len(inputs)} inputs ({names}); an image classifier here takes exactly one, "
            "a batch of images (N, C, H, W)"
        )
    value = inputs[0]
    if not value.type.HasField("tensor_type"):
        raise refuse(
            f"input {value.name[:60]!r} is not a tensor; it must be a rank-4 float tensor (N, C, H, W)"
        )
    info = tensor_info(value)
    if info.type != "FLOAT" or len(info.shape) != 4:
        raise refuse(
            f"input {info.name[:60]!r} is a rank-{len(info.shape)} {info.type} tensor; it must be a rank-4 "
            "FLOAT tensor (N, C, H, W): the service feeds fp32 images"
        )
    if not all(isinstance(d, int) and d > 0 for d in info.shape[1:]):
        raise refuse(
            f"input {info.name[:60]!r} has shape {info.shape}: channels, height and width must be fixed "
            "numbers (only the batch axis may be symbolic), so that the profile knows its image size"
        )
    return info


def count_params(graph: GraphProto) -> int:
    """Elements of the floating-point initialisers (weights), less what BatchNormalization reads as
    its running mean and variance (inputs 3 and 4): buffers, not learned parameters."""
    statistics = {name for n in graph.node if n.op_type == "BatchNormalization" for name in n.input[3:5]}
    floating = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE}
    total = 0
    for tensor in graph.initializer:
        if tensor.data_type in floating and tensor.name not in statistics:
            count = 1
            for d in tensor.dims:
                count *= d
            total += count
    return total
