"""ONNX files built in the tests of uploads (issue 42), with onnx.helper: a tiny valid classifier
and the hostile or unusable files the API must refuse."""

from __future__ import annotations

import io
import pickle
import zipfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 18


def _model(nodes, inputs, outputs, initializers=(), domains=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    imports = [helper.make_opsetid("", OPSET), *(helper.make_opsetid(d, 1) for d in domains)]
    return helper.make_model(graph, opset_imports=imports, ir_version=10, producer_name="tests")


def _tensor(name: str, shape: tuple[int, ...], seed: int = 0) -> TensorProto:
    values = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return numpy_helper.from_array(values, name)


def classifier(classes: int = 10, size: int = 8, weights: int = 0) -> onnx.ModelProto:
    """x (N, 3, size, size) -> Conv 3x3 (4 filters, pad 1) -> GlobalAveragePool -> Flatten -> Gemm.

    By hand, per image at size 8: the Conv makes 4·8·8 = 256 outputs of 3·3·3 = 27 multiply-adds
    (13,824 FLOPs), the Gemm 1×classes outputs of 4 (80 FLOPs at 10 classes): 13,904 FLOPs.
    Parameters: 4·3·3·3 + 4 + classes·4 + classes = 162 at 10 classes. ``weights`` adds an unused
    initialiser of that many floats (a larger file)."""
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["logits"], transB=1),
    ]
    inits = [
        _tensor("w", (4, 3, 3, 3)),
        _tensor("b", (4,)),
        _tensor("fw", (classes, 4)),
        _tensor("fb", (classes,)),
    ]
    if weights:
        inits.append(_tensor("unused", (weights,)))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, size, size])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])
    return _model(nodes, [x], [y], inits)


def classifier_bytes(**kw) -> bytes:
    return classifier(**kw).SerializeToString()


def external_data() -> bytes:
    """The classifier with its Conv weight said to live in ``../../etc/passwd`` (CVE-2022-25882's
    shape: a path traversal through external data)."""
    model = classifier()
    weight = model.graph.initializer[0]
    weight.ClearField("raw_data")
    weight.ClearField("float_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "../../etc/passwd"), ("offset", "0"), ("length", "432")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    return model.SerializeToString()


def truncated() -> bytes:
    data = classifier_bytes()
    return data[: len(data) // 2]


def zip_archive() -> bytes:
    """What torch.save and a .pt2 write: a zip archive (with a pickle inside)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"weight": [1.0, 2.0]}))
        archive.writestr("archive/version", "3\n")
    return out.getvalue()


def pickled() -> bytes:
    return pickle.dumps({"state_dict": {"fc.weight": [0.1] * 8}}, protocol=4)


def many_nodes(count: int) -> bytes:
    """A chain of ``count`` Relu nodes on an image input."""
    names = ["x", *(f"r{i}" for i in range(count))]
    nodes = [helper.make_node("Relu", [names[i]], [names[i + 1]]) for i in range(count)]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])
    y = helper.make_tensor_value_info(names[-1], TensorProto.FLOAT, ["batch", 3, 8, 8])
    return _model(nodes, [x], [y]).SerializeToString()


def custom_domain() -> bytes:
    """A node of a custom domain: no runtime here implements it (it would be a plugin to load)."""
    nodes = [helper.make_node("Secret", ["x"], ["y"], domain="com.example.evil")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])
    return _model(nodes, [x], [y], domains=["com.example.evil"]).SerializeToString()


def checker_fails() -> bytes:
    """Add of a float and an int64 tensor: the schema's type constraint fails full checking."""
    nodes = [helper.make_node("Add", ["x", "k"], ["y"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, 8, 8])
    k = numpy_helper.from_array(np.ones((1,), dtype=np.int64), "k")
    return _model(nodes, [x], [y], [k]).SerializeToString()


def two_inputs() -> bytes:
    nodes = [helper.make_node("Add", ["x", "z"], ["y"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, 8, 8])
    return _model(nodes, [x, z], [y]).SerializeToString()


def one_input(elem_type: int, shape: list) -> bytes:
    nodes = [helper.make_node("Identity", ["x"], ["y"])]
    x = helper.make_tensor_value_info("x", elem_type, shape)
    y = helper.make_tensor_value_info("y", elem_type, shape)
    return _model(nodes, [x], [y]).SerializeToString()


def attention() -> bytes:
    """Opset 23's Attention on the image as (batch, 3 heads, 8 positions, 8 features): Q = K = V."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, 8, 8])
    graph = helper.make_graph([helper.make_node("Attention", ["x", "x", "x"], ["y"])], "g", [x], [y])
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 23)], ir_version=11
    ).SerializeToString()
