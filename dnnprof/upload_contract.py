"""What an upload's check answers, apart from the check itself (:mod:`dnnprof.onnx_check`, which
imports onnx and numpy): the API loads that only when a file arrives, so that its start imports
neither (tests/test_layout.py)."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

#: What the upload endpoint takes, for the refusals that say so.
ACCEPTED = (
    "an ONNX model (a serialised onnx.ModelProto, as torch.onnx.export or onnx.save write it, "
    "with every tensor inside the file), sent as application/onnx or application/octet-stream"
)


class UploadRefused(Exception):
    """A file the service will not take, with the HTTP status and what the client is told."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    max_nodes: int


class TensorInfo(msgspec.Struct, kw_only=True):
    """A graph input or output: its name, shape (an int, or the name of a symbolic dimension) and
    element type (ONNX's name: "FLOAT")."""

    name: str
    shape: list[int | str]
    type: str


class OnnxSummary(msgspec.Struct, kw_only=True):
    """What the service knows of an uploaded model from its graph alone."""

    input: TensorInfo
    outputs: list[TensorInfo]
    #: The size of the first output's last axis: the classes of a classifier's head.
    num_classes: int | None
    #: The version of the standard domain the model imports.
    opset: int
    ir_version: int
    producer: str
    nodes: int
    #: Elements of the floating-point initialisers, less BatchNormalization's running statistics
    #: (buffers, which torch does not count as parameters either).
    params: int
    #: Per image (batch 1), one multiply-add = 2 FLOPs (see :mod:`dnnprof.onnx_flops`).
    flops: int | None
    flops_note: str | None = None
