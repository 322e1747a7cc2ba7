"""ONNX Runtime and OpenVINO, both from one ONNX export per (model, input size, opset) with a
dynamic batch axis, cached under the worker's data directory. The export is ``torch.onnx.export``
(dynamo); its outputs are checked against eager by the engine before anything is timed."""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dnnprof.config import MIB, Settings
from dnnprof.contract import ProfileSettings, RuntimeReport
from dnnprof.runtimes import OPTIONS
from workers.engine.device import DeviceContext
from workers.engine.runtimes import cache as export_cache
from workers.engine.runtimes.base import ExportError
from workers.runtime_support import installed

DEFAULT_OPSET = int(OPTIONS["opset"].default or 0)  # the runtime spec's (dnnprof/runtimes.py)


def export_onnx(
    model: nn.Module, settings: ProfileSettings, cache: Path, opset: int, *, limit_bytes: int | None = None
) -> tuple[Path, float, bool]:
    """The model's ONNX file (exported now, or found in the cache and checked: see
    :mod:`workers.engine.runtimes.cache`), the export's seconds, and whether it came from the
    cache. The key is what determines the export: the model, its form, input size, opset, torch's
    version and the weights' content. ``limit_bytes`` bounds the cache (least recently used out).
    An uploaded file is run as it is (issue 42)."""
    if hasattr(model, "onnx_path"):  # workers.engine.uploaded.UploadedOnnx: its hash checked again
        return model.verified_path(), 0.0, True
    identity = export_cache.weights_identity(model)
    form = "deployed" if settings.reparameterize else "built"
    name = f"{settings.model.replace(':', '_').replace('/', '_')}-{form}-{settings.input_size}-opset{opset}"
    key = f"{name}-{identity}"
    path = cache / f"{name}-{identity[:12]}.onnx"
    size = settings.input_size
    export_cache.prepare_folder(cache)
    if export_cache.use(path, key, ["batch", 3, size, size]):
        return path, 0.0, True
    example = torch.randn(2, 3, size, size)
    batch = torch.export.Dim("batch", min=1, max=1024)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(open(os.devnull, "w")):
            torch.onnx.export(
                model.float().cpu(),
                (example,),
                str(tmp),
                dynamo=True,
                dynamic_shapes=({0: batch},),
                opset_version=opset,
                external_data=False,
            )
    except Exception as exc:  # any exporter failure is the profile's reason
        tmp.unlink(missing_ok=True)
        why = "; ".join(_first_line(e) for e in (exc, exc.__cause__) if e is not None)
        raise ExportError(f"the ONNX export failed: {why}"[:600]) from exc
    export_s = time.perf_counter() - start
    export_cache.keep(tmp, path, key)
    if limit_bytes is not None:
        export_cache.prune(cache, limit_bytes, path)
    return path, export_s, False


def cache_limit_bytes() -> int:
    """``DNNPROF_RUNTIME_CACHE_MB`` of the worker's settings, in bytes."""
    return Settings.from_env().runtime_cache_mb * MIB


def _first_line(exc: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def _report(
    name: str,
    version: str | None,
    provider: str,
    settings: ProfileSettings,
    opset: int,
    graph: str,
    prepared: tuple[float, bool],
) -> RuntimeReport:
    """What ran an ONNX model: ``prepared`` is (export + session seconds, export from the cache)."""
    prepare_s, cached = prepared
    return RuntimeReport(
        name=name,
        version=version,
        provider=provider,
        options=settings.runtime_options,
        opset=opset,
        graph_optimization=graph,
        prepare_s=prepare_s,
        export_cached=cached,
        io="host",  # inputs and outputs are host arrays, converted once before the timed calls
    )


def _opset(settings: ProfileSettings) -> int:
    options = settings.runtime_options
    return options.opset if options is not None and options.opset else DEFAULT_OPSET


class OnnxPrepared:
    def __init__(self, session, report: RuntimeReport, onnx_path: Path | None = None) -> None:
        self.session = session
        self.onnx_path = onnx_path  # its own profiled session is made from it (layer profiles)
        self.input_name = session.get_inputs()[0].name
        self.report = report

    def bind(self, x: torch.Tensor) -> Callable[[], object]:
        feed = {self.input_name: x.detach().float().cpu().numpy()}  # converted once, not timed
        session = self.session
        return lambda: session.run(None, feed)

    def logits(self, x: torch.Tensor) -> np.ndarray:
        return np.asarray(self.session.run(None, {self.input_name: x.detach().float().cpu().numpy()})[0])


class OnnxRuntime:
    """ONNX Runtime's CPU provider. Its CUDA and TensorRT providers (onnxruntime-gpu) are not
    measured until their path has run on a GPU: the runtime's row (:mod:`dnnprof.runtimes`) lists
    the CPU only, so no GPU worker advertises it."""

    name = "onnxruntime"

    def prepare(
        self, model: nn.Module, settings: ProfileSettings, ctx: DeviceContext, cache: Path
    ) -> OnnxPrepared:
        import onnxruntime as ort

        provider = (settings.runtime_options.provider if settings.runtime_options else None) or "cpu"
        if provider != "cpu" or ctx.device.type != "cpu":
            raise ExportError(f"ONNX Runtime's {provider} provider is not measured by this worker yet")
        opset = _opset(settings)
        path, export_s, cached = export_onnx(
            model, settings, cache / "onnx", opset, limit_bytes=cache_limit_bytes()
        )
        start = time.perf_counter()
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # the count the fingerprint records
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        graph = f"ORT_ENABLE_ALL, {options.intra_op_num_threads} intra-op threads"
        prepared = (export_s + time.perf_counter() - start, cached)
        report = _report(self.name, ort.__version__, "CPUExecutionProvider", settings, opset, graph, prepared)
        return OnnxPrepared(session, report, path)


class OpenVinoPrepared:
    def __init__(self, compiled, report: RuntimeReport, onnx_path: Path | None = None) -> None:
        self.compiled = compiled
        self.onnx_path = onnx_path  # its own profiled model is compiled from it (layer profiles)
        self.output = compiled.output(0)
        self.report = report

    def bind(self, x: torch.Tensor) -> Callable[[], object]:
        request = self.compiled.create_infer_request()
        array = x.detach().float().cpu().numpy()
        return lambda: request.infer({0: array})

    def logits(self, x: torch.Tensor) -> np.ndarray:
        result = self.compiled.create_infer_request().infer({0: x.detach().float().cpu().numpy()})
        return np.asarray(result[self.output])


class OpenVinoRuntime:
    """OpenVINO on the CPU, in f32 (its CPU plugin would otherwise run bf16 where the CPU has it:
    a different precision than the one asked for)."""

    name = "openvino"

    def prepare(
        self, model: nn.Module, settings: ProfileSettings, ctx: DeviceContext, cache: Path
    ) -> OpenVinoPrepared:
        import openvino as ov

        opset = _opset(settings)
        path, export_s, cached = export_onnx(
            model, settings, cache / "onnx", opset, limit_bytes=cache_limit_bytes()
        )
        start = time.perf_counter()
        core = ov.Core()
        config = {"INFERENCE_NUM_THREADS": torch.get_num_threads(), "INFERENCE_PRECISION_HINT": "f32"}
        compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        graph = f"f32, {config['INFERENCE_NUM_THREADS']} threads"
        prepared = (export_s + time.perf_counter() - start, cached)
        report = _report(self.name, installed("openvino"), "CPU", settings, opset, graph, prepared)
        return OpenVinoPrepared(compiled, report, path)
