"""An uploaded ONNX file in the measuring process (issue 42): fetched from the store by its sha256
(no shared filesystem), cached by hash in the worker's data directory, its hash verified before
anything loads it, and run as uploaded by the ONNX runtimes.

:class:`UploadedOnnx` stands where a catalogue model's torch module stands. It has no weights of
its own: its forward is ONNX Runtime's CPU run of the file, the reference the outputs check
compares each runtime with. The ONNX runtimes take the file itself (no export); its static
figures (parameters, FLOPs, file size) are counted from the graph (:mod:`dnnprof.onnx_flops`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dnnprof.contract import FlopCount, ModelInfo
from dnnprof.store import ProfileStore

READ_BYTES = 1 << 20


class UploadMissingError(RuntimeError):
    """The uploaded file is no longer in the store (deleted) or does not hash to its name."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(READ_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def cached_upload(store: ProfileStore, sha256: str, data_dir: Path) -> Path:
    """``<data_dir>/uploads/<sha256>.onnx``, fetched from the store where it is not cached or its
    hash does not verify. The name is the hash: nothing in the file names a path."""
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise UploadMissingError(f"not a sha256: {sha256[:80]!r}")
    folder = data_dir / "uploads"
    path = folder / f"{sha256}.onnx"
    if path.exists() and sha256_of(path) == sha256:
        return path
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f"{sha256}.{os.getpid()}.partial"
    digest = hashlib.sha256()
    try:
        with open(partial, "wb") as fh:
            for chunk in store.blob_chunks(sha256):
                digest.update(chunk)
                fh.write(chunk)
        if digest.hexdigest() != sha256:
            raise UploadMissingError(
                f"the uploaded file {sha256[:12]}… is not in the store (deleted) or does not hash to its name"
            )
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return path


class UploadedOnnx(nn.Module):
    """The uploaded file where the engine expects a module: ``onnx_path`` for the ONNX runtimes,
    and a forward that runs it in ONNX Runtime on the CPU (a session per call: it is called only
    by the outputs check, and holds no memory while the cells are measured)."""

    def __init__(self, path: Path, sha256: str) -> None:
        super().__init__()
        self.onnx_path, self.sha256 = path, sha256

    def verified_path(self) -> Path:
        """The file, its hash checked again before it is loaded (the cache is a folder on disk)."""
        if sha256_of(self.onnx_path) != self.sha256:
            raise UploadMissingError(f"{self.onnx_path} no longer hashes to {self.sha256[:12]}…")
        return self.onnx_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(str(self.verified_path()), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x.detach().float().cpu().numpy()}
        return torch.from_numpy(np.asarray(session.run(None, feed)[0])).to(x.device)


def load_upload(store: ProfileStore, info: ModelInfo, data_dir: Path) -> UploadedOnnx:
    if not info.sha256:
        raise UploadMissingError(f"{info.name} names no uploaded file")
    return UploadedOnnx(cached_upload(store, info.sha256, data_dir), info.sha256)


def upload_statics(model: UploadedOnnx) -> tuple[int, int, FlopCount]:
    """Parameters, the file's size (its parameter file: what is deployed) and FLOPs per image,
    counted from the graph as the API counted them at upload."""
    import onnx

    from dnnprof.onnx_check import count_params, image_input
    from dnnprof.onnx_flops import count_graph_flops

    graph = onnx.load(str(model.verified_path()), load_external_data=False)
    flops, note = count_graph_flops(graph, image_input(graph).name)
    count = FlopCount(flops=flops, method="onnx graph (dnnprof.onnx_flops: 1 MAC = 2 FLOPs)", note=note)
    return count_params(graph.graph), model.onnx_path.stat().st_size, count
